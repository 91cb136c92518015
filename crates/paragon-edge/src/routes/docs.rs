//! `GET /openapi.json`, the OpenAPI 3.1 document of the HTTP API, and `GET /admin/ui`,
//! the live status page for people.
//!
//! The document is generated from the code by `utoipa`: each handler carries a
//! `#[utoipa::path]` annotation next to its code, and [`ApiDoc`] lists them, so a route
//! and its description change together. The page is one HTML file
//! (`assets/admin-ui.html`, with its CSS and JavaScript inline) compiled into the
//! binary; it polls `/admin/status` and draws its charts itself, and sends the admin
//! actions with the token the operator types in.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::problem::Problem;

/// The status page, as served.
pub const ADMIN_UI: &str = include_str!("../../assets/admin-ui.html");

/// What the status page may load: nothing from elsewhere, only its own inline style and
/// script, and requests to this edge.
const ADMIN_UI_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// A user as ParagoN sent it: `id`, `name`, `email` and any other field, kept as they are.
#[derive(serde::Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserDoc {
    /// The user's id, the one asked for.
    pub id: String,
    /// The user's name.
    pub name: Option<String>,
    /// The user's e-mail address.
    pub email: Option<String>,
    /// Every other field ParagoN sent, unchanged.
    #[serde(flatten)]
    pub other: HashMap<String, serde_json::Value>,
}

/// The answer to a batch: the users found and a problem for each id that failed.
#[derive(ToSchema)]
#[schema(as = Batch)]
pub struct BatchDoc {
    /// The users found, by id, in the order asked.
    pub users: HashMap<String, UserDoc>,
    /// A problem for each id that failed, by id.
    pub errors: HashMap<String, Problem>,
}

/// The forced breaker state after an admin action.
#[derive(ToSchema)]
#[schema(as = BreakerForced)]
pub struct BreakerForcedDoc {
    /// `closed`, `open`, `half_open` or `forced_open`.
    pub state: String,
}

/// The circuit-breaker actions of `POST /admin/circuit-breaker/{action}`.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum BreakerAction {
    /// Force the breaker open: every call fails fast until closed or reset.
    Open,
    /// Force the breaker closed.
    Close,
    /// Back to closed, its counts forgotten.
    Reset,
}

/// Adds the admin bearer token as a security scheme.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`server.admin_token`, as `Authorization: Bearer <token>`",
                    ))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI document of the edge's HTTP API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ParagoN Edge",
        description = "A cached, rate-limited, circuit-broken ParagoN API for frontends. \
            Errors are RFC 9457 problems (`application/problem+json`); every answer carries \
            `x-request-id`."
    ),
    paths(
        crate::routes::users::get_user,
        crate::routes::users::get_batch,
        crate::routes::ops::healthz,
        crate::routes::ops::readyz,
        crate::routes::ops::metrics,
        crate::routes::admin::status,
        crate::routes::admin::breaker,
        crate::routes::admin::purge,
        crate::routes::admin::resume,
        crate::routes::reload::reload,
        admin_ui,
        openapi,
    ),
    components(schemas(Problem, UserDoc, BatchDoc, BreakerForcedDoc, BreakerAction)),
    modifiers(&AdminToken),
    tags(
        (name = "users", description = "ParagoN's users, through the cache, breaker and rate limiter"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
        (name = "admin", description = "Live status (open) and operator actions (with the admin token)"),
    )
)]
pub struct ApiDoc;

/// The document as JSON, made once.
pub fn openapi_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"the document cannot be written: {e}\"}}"))
    })
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", body = Object))
)]
pub async fn openapi() -> Response {
    let mut r = (StatusCode::OK, openapi_json()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The live status page: one HTML page with its style and script inline, no external
/// asset; it polls `/admin/status` every second.
#[utoipa::path(
    get,
    path = "/admin/ui",
    tag = "admin",
    responses((status = 200, description = "The live status page (HTML, no external assets)", body = String, content_type = "text/html"))
)]
pub async fn admin_ui() -> Response {
    let mut r = (StatusCode::OK, ADMIN_UI).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(ADMIN_UI_CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_the_page_has_no_external_asset() {
        let doc: serde_json::Value = serde_json::from_str(openapi_json()).expect("JSON");
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "{doc}"
        );
        // The SVG namespace is a name, not something loaded.
        let page = ADMIN_UI.replace("\"http://www.w3.org/2000/svg\"", "");
        for needle in ["http://", "https://", "src=", "href=", "@import", "url("] {
            assert!(!page.contains(needle), "the page holds {needle:?}");
        }
    }
}
