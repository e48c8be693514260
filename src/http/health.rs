use actix_web::HttpResponse;

/// `GET /health`: the process is up and serving. Touches neither store nor
/// credentials, so it also measures the HTTP stack's own ceiling.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok\n")
}
