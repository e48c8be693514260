use actix_web::{web, HttpResponse};

use super::AppState;

/// `GET /health`: 200 `ok` while the server can serve; 503 with a short
/// reason when its store knows it cannot take writes (a read-only or full
/// disk, a database file deleted or replaced under it). Asks the store only
/// what it already knows, with no I/O and no credentials, so it stays as
/// cheap as the HTTP stack itself.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    match state.store.health() {
        Ok(()) => HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body("ok\n"),
        Err(why) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain; charset=utf-8")
            .insert_header(("Cache-Control", "no-store"))
            .body(format!("unavailable: {why}\n")),
    }
}
