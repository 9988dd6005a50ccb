//! Probes for load balancers and orchestrators, plus the files compiled into the binary
//! (the stylesheet and the OpenAPI document).

use actix_web::{HttpResponse, web::Data};

use crate::db;

use super::AppState;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body("ok")
}

/// How long the readiness probe waits for a database connection.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_millis(800);

/// `GET /readyz`: the database answers (503 when it does not, within a second).
pub async fn readyz(state: Data<AppState>) -> HttpResponse {
    match db::run_within(&state.services.pool, READY_WITHIN, db::ping).await {
        Ok(()) => HttpResponse::Ok()
            .content_type("text/plain; charset=utf-8")
            .body("ready"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            HttpResponse::ServiceUnavailable()
                .content_type("text/plain; charset=utf-8")
                .body("database unavailable")
        }
    }
}

/// `GET /openapi.json`: the OpenAPI 3 description of the JSON API.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .body(include_str!("../../static/openapi.json"))
}

/// `GET /static/style.css`, compiled into the binary so it runs from any directory.
pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .body(include_str!("../../static/style.css"))
}
