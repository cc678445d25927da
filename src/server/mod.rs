//! The HTTP server (placeholder until the server issue lands).

/// `prochub serve`.
pub async fn serve_command(_args: crate::cli::ServeArgs) -> anyhow::Result<u8> {
    anyhow::bail!("the server is not built yet")
}
