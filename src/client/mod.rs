//! The Rust client and the CLI's client commands (placeholder until the
//! client issue lands).

pub mod commands {
    /// Every command but `serve`.
    pub async fn run(_cmd: crate::cli::Command) -> anyhow::Result<u8> {
        anyhow::bail!("the client is not built yet")
    }
}
