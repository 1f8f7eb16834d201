//! The HTTP ceiling for benchmarks: a minimal axum server answering `GET /` with
//! "hello", built with the same axum/tokio as oxidex. Usage: `hello [ADDR]`.

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("hello listening on {}", listener.local_addr()?);
    axum::serve(
        listener,
        Router::new().route("/", get(|| async { "hello" })),
    )
    .await
}
