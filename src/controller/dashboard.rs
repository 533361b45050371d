//! The dashboard's files, embedded in the binary (no CDN, no build step):
//! one page, its script and its style sheet under `ui/`. The page holds no
//! data; it asks for the admin token and reads everything through the API.

use super::admin::AdminReply;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// Only our own files run, nothing embeds the page (the maintenance buttons
/// must not be clickjacked), and nothing is sent elsewhere.
const PAGE_HEADERS: &str = "content-security-policy: default-src 'self'; frame-ancestors 'none'; \
                            form-action 'self'; base-uri 'none'\r\nx-frame-options: DENY\r\n\
                            x-content-type-options: nosniff\r\nreferrer-policy: no-referrer\r\n";

/// Whether a path belongs to the dashboard (served without the token).
pub(super) fn is_page(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// The dashboard's answer for `path`, or `None` when the path is not one of
/// its own (it goes to the API).
pub(super) fn page(method: &str, path: &str) -> Option<AdminReply> {
    if !is_page(path) {
        return None;
    }
    let file = match path {
        "/" | "/ui" | "/ui/" | "/ui/index.html" => Some((INDEX, "text/html; charset=utf-8")),
        "/ui/app.js" => Some((SCRIPT, "text/javascript; charset=utf-8")),
        "/ui/app.css" => Some((STYLE, "text/css; charset=utf-8")),
        _ => None,
    };
    let reply = match (method, file) {
        ("GET", Some((text, content_type))) => AdminReply {
            status: 200,
            body: text.as_bytes().to_vec(),
            content_type,
            etag: None,
            headers: PAGE_HEADERS,
            allow: None,
        },
        (_, Some(_)) => AdminReply::not_allowed("GET"),
        (_, None) => AdminReply::json(
            404,
            &serde_json::json!({"error": "notFound", "field": null, "message": format!("no such page {path:?}")}),
        ),
    };
    Some(reply)
}
