//! The HTML pages: `GET /` (a list of the VMs with links to their viewer, for the admin token
//! only; everyone else gets a line saying to open the link they were given) and `GET /vm/{vmId}`
//! (the viewer page, for any valid id: the page itself asks `/api/vms/{vmId}` with its token),
//! and `/healthz`.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use crate::assets::{file, HTML, VIEWER_HTML};
use crate::extract::VmParam;
use crate::state::AppState;

pub(crate) async fn viewer(VmParam(_vm): VmParam) -> Response {
    file(HTML, VIEWER_HTML)
}

pub(crate) async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if !crate::access::is_admin(&state, &headers) {
        return file(
            HTML,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>vdesk</title>\
             </head>\n<body><h1>vdesk</h1>\n<p>Open the viewer link you were given \
             (it ends in <code>?token=...</code>).</p>\n</body></html>\n",
        );
    }
    let vms = state.relay(|r, _| r.vms());
    let mut items = String::new();
    for vm in &vms {
        let id = escape(vm.vm_id.as_str());
        let status = if vm.online { "online" } else { "offline" };
        items.push_str(&format!(
            "<li><a href=\"/vm/{id}\">{id}</a> <small>({status})</small></li>\n"
        ));
    }
    if vms.is_empty() {
        items.push_str("<li>No VM yet: start a vdesk-agent, or pass --vm ID.</li>\n");
    }
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>vdesk</title></head>\n<body><h1>vdesk</h1>\n<ul>\n{items}</ul>\n</body></html>\n"
    );
    file(HTML, page)
}

/// HTML-escapes text (VM ids are already restricted to `[A-Za-z0-9._-]`; this is belt and braces).
fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// `GET /healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "public",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}
