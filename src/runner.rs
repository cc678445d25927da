//! Server-run commands (SPEC section 6): spawn, pipe stdout/stderr into the
//! store as chunks, record the exit, cancel with SIGTERM then SIGKILL.
//! (Placeholder API until the client/exec issue lands.)
