//! Signing in and out, the session cookie, CSRF tokens, and the error pages of the web app.

use super::Web;
use crate::auth::{self, Caller, Credentials, API_TOKEN_PREFIX};
use crate::error::FlightError;
use askama::Template;
use axum::extract::{Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The session cookie's name.
pub const COOKIE: &str = "bc_session";

/// Session tokens signed out before they expire, until they expire (per process: another
/// replica honours the token until its expiry; the credential's revocation ends it everywhere).
#[derive(Debug, Default)]
pub struct SignedOut {
    tokens: Mutex<HashMap<String, std::time::Instant>>,
}

impl SignedOut {
    fn key(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }
    fn add(&self, token: &str, ttl: std::time::Duration) {
        if let Ok(mut m) = self.tokens.lock() {
            let now = std::time::Instant::now();
            m.retain(|_, until| *until > now);
            m.insert(Self::key(token), now + ttl);
        }
    }
    fn contains(&self, token: &str) -> bool {
        self.tokens
            .lock()
            .map(|m| m.contains_key(&Self::key(token)))
            .unwrap_or(true)
    }
}

/// The CSRF token of a session: a hash of the session token, which only a page of this origin
/// (that got it in a form) can know, since the cookie itself is HttpOnly.
pub fn csrf_of(token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"barecount-csrf-v1\0");
    h.update(token.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// What went wrong, as the web app answers it: a page for a browser, JSON under /api/.
#[derive(Debug)]
pub enum WebError {
    /// Not signed in (or the session ended): the sign-in page, or 401.
    SignIn(String),
    Forbidden(String),
    NotFound(String),
    BadRequest(String),
    Internal(String),
}

impl From<FlightError> for WebError {
    fn from(e: FlightError) -> Self {
        match e {
            FlightError::Unauthenticated(m) | FlightError::BadTicket(m) => WebError::SignIn(m),
            FlightError::PermissionDenied(m) => WebError::Forbidden(m),
            FlightError::NotFound(m) => WebError::NotFound(m),
            e @ (FlightError::UnknownDataset(_) | FlightError::UnknownVersion { .. }) => {
                WebError::NotFound(e.to_string())
            }
            FlightError::InvalidRequest(m) | FlightError::Sql(m) => WebError::BadRequest(m),
            other => {
                tracing::warn!("web: {other}");
                WebError::Internal("the server could not answer; try again".into())
            }
        }
    }
}

impl From<tokio_postgres::Error> for WebError {
    fn from(e: tokio_postgres::Error) -> Self {
        FlightError::from(e).into()
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
    viewer: Option<&'a Viewer>,
}

impl WebError {
    fn status(&self) -> StatusCode {
        match self {
            WebError::SignIn(_) => StatusCode::UNAUTHORIZED,
            WebError::Forbidden(_) => StatusCode::FORBIDDEN,
            WebError::NotFound(_) => StatusCode::NOT_FOUND,
            WebError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
    fn message(&self) -> &str {
        match self {
            WebError::SignIn(m)
            | WebError::Forbidden(m)
            | WebError::NotFound(m)
            | WebError::BadRequest(m)
            | WebError::Internal(m) => m,
        }
    }
    /// The JSON answer of the API: {"error": {"code", "message"}}.
    pub fn json(self) -> Response {
        let code = match &self {
            WebError::SignIn(_) => "unauthenticated",
            WebError::Forbidden(_) => "permission_denied",
            WebError::NotFound(_) => "not_found",
            WebError::BadRequest(_) => "invalid_argument",
            WebError::Internal(_) => "internal",
        };
        let body = serde_json::json!({"error": {"code": code, "message": self.message()}});
        (self.status(), axum::Json(body)).into_response()
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        if let WebError::SignIn(_) = self {
            return Redirect::to("/login").into_response();
        }
        let title = match self.status() {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::BAD_REQUEST => "Bad request",
            _ => "Something went wrong",
        };
        let page = ErrorPage {
            title,
            message: self.message(),
            viewer: None,
        };
        (self.status(), render(&page)).into_response()
    }
}

/// Renders a template (an error in a template is the server's).
pub fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::warn!("web: template: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response()
        }
    }
}

/// A signed-in caller, from the session cookie or an `Authorization: Bearer` header (API
/// tokens and Flight session tokens, for scripts).
#[derive(Debug, Clone)]
pub struct Viewer {
    pub caller: Caller,
    pub csrf: String,
    token: String,
    /// Whether the credential came in a cookie (a browser), so state changes need the CSRF
    /// token.
    from_cookie: bool,
}

impl Viewer {
    /// Refuses a state-changing request from a cookie unless it carries the session's CSRF
    /// token.
    pub fn check_csrf(&self, presented: &str) -> Result<(), WebError> {
        if !self.from_cookie || presented == self.csrf {
            Ok(())
        } else {
            Err(WebError::Forbidden(
                "the form is stale or came from another site (CSRF token mismatch); reload the page and try again".into(),
            ))
        }
    }
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A request a browser made from another site (`Sec-Fetch-Site: cross-site`): refused for
/// anything that changes state, sign-in included.
pub fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
}

impl FromRequestParts<Arc<Web>> for Viewer {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, web: &Arc<Web>) -> Result<Self, WebError> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let (token, from_cookie) = match bearer {
            Some(t) => (t, false),
            None => match cookie_value(&parts.headers, COOKIE) {
                Some(t) if !t.is_empty() => (t.to_owned(), true),
                _ => return Err(WebError::SignIn("sign in first".into())),
            },
        };
        if web.sessions.contains(&token) {
            return Err(WebError::SignIn("signed out; sign in again".into()));
        }
        let state = &web.state;
        let caller = auth::authenticate(
            &state.db,
            &state.signer,
            &state.live,
            &Credentials::Bearer(token.clone()),
        )
        .await?;
        caller.require("read")?;
        Ok(Viewer {
            caller,
            csrf: csrf_of(&token),
            token,
            from_cookie,
        })
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    error: Option<&'a str>,
    user: &'a str,
    viewer: Option<&'a Viewer>,
}

pub async fn login_form() -> Response {
    render(&LoginPage {
        error: None,
        user: "",
        viewer: None,
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    secret: String,
}

/// Signs in with a role's password or an API token (user name ignored for a token).
pub async fn login(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let refuse = |status: StatusCode, message: &str, user: &str| {
        (
            status,
            render(&LoginPage {
                error: Some(message),
                user,
                viewer: None,
            }),
        )
            .into_response()
    };
    if cross_site(&headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "sign-in from another site refused",
            "",
        );
    }
    let creds = if form.secret.starts_with(API_TOKEN_PREFIX) {
        Credentials::Bearer(form.secret.clone())
    } else if form.user.is_empty() || form.secret.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "enter a role and its password, or an API token",
            &form.user,
        );
    } else {
        Credentials::Basic {
            user: form.user.clone(),
            password: form.secret.clone(),
        }
    };
    let state = &web.state;
    let caller = match auth::authenticate(&state.db, &state.signer, &state.live, &creds).await {
        Ok(c) => c,
        Err(FlightError::Unauthenticated(_)) | Err(FlightError::PermissionDenied(_)) => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "those credentials were not accepted",
                &form.user,
            )
        }
        Err(e) => {
            tracing::warn!("web: sign-in: {e}");
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "sign-in is unavailable; try again",
                &form.user,
            );
        }
    };
    if caller.require("read").is_err() {
        return refuse(
            StatusCode::FORBIDDEN,
            "those credentials cannot read (no read scope)",
            &form.user,
        );
    }
    let token = match state
        .signer
        .session(&caller.tenant, &caller.subject, &caller.scopes)
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("web: session: {e}");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not open a session",
                &form.user,
            );
        }
    };
    let cookie = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{}",
        if web.tls { "; Secure" } else { "" }
    );
    let mut response = Redirect::to("/catalog").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// Signs out: the session token is refused from now on and the cookie is cleared.
pub async fn logout(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    Form(form): Form<CsrfForm>,
) -> Result<Response, WebError> {
    viewer.check_csrf(&form.csrf)?;
    web.sessions.add(
        &viewer.token,
        std::time::Duration::from_secs(web.state.signer.session_ttl_secs()),
    );
    let mut response = Redirect::to("/login").into_response();
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_differ_per_session_and_cookies_parse() {
        assert_ne!(csrf_of("a"), csrf_of("b"));
        assert_eq!(csrf_of("a").len(), 32);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; bc_session=abc; y=2"),
        );
        assert_eq!(cookie_value(&h, COOKIE), Some("abc"));
        assert_eq!(cookie_value(&h, "z"), None);
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(cross_site(&h));
    }
}
