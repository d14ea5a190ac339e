//! `GET /api/openapi.json` against the route table: every row of `ROUTES` (but the pages, files
//! and WebSocket of `openapi::UNDOCUMENTED`) is an operation of the document with its method, the
//! document has no operation that the table lacks, and the served document is the generated one.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;
use vdesk_controller::app;
use vdesk_controller::routes::openapi::{self, UNDOCUMENTED};
use vdesk_controller::routes::ROUTES;

fn document() -> Value {
    serde_json::from_str(openapi::json()).unwrap()
}

/// `(METHOD, path)` of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

fn table() -> BTreeSet<(String, String)> {
    ROUTES
        .iter()
        .filter(|r| !UNDOCUMENTED.contains(&r.path))
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect()
}

#[test]
fn every_route_of_the_table_is_in_the_document() {
    let missing: Vec<_> = table()
        .difference(&operations(&document()))
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "rows of ROUTES missing from /api/openapi.json (add #[utoipa::path] to the handler and \
         list it in routes/openapi.rs, or add the path to UNDOCUMENTED): {missing:?}"
    );
}

#[test]
fn the_document_lists_no_route_the_table_lacks() {
    let extra: Vec<_> = operations(&document())
        .difference(&table())
        .cloned()
        .collect();
    assert!(extra.is_empty(), "operations not in ROUTES: {extra:?}");
}

#[test]
fn every_undocumented_path_is_a_row_of_the_table() {
    for path in UNDOCUMENTED {
        assert!(
            ROUTES.iter().any(|r| r.path == *path),
            "UNDOCUMENTED lists {path}, which ROUTES lacks"
        );
    }
    // The table is not trivially all left out.
    assert!(table().len() >= 14, "{:?}", table());
}

#[test]
fn schemas_and_errors_are_in_the_document() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "ErrorBody",
        "VmList",
        "SessionCreated",
        "CreateSession",
        "MintLink",
        "Link",
        "CandidateList",
    ] {
        assert!(schemas.contains_key(name), "no schema {name}");
    }
    let create = &doc["paths"]["/api/webrtc/session"]["post"];
    assert!(create["responses"]["201"].is_object());
    assert!(create["responses"]["401"]["content"]["application/json"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn the_document_is_served_without_a_credential() {
    let app = app(state());
    let resp = send(&app, anon_get("/api/openapi.json")).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(body_json(resp).await, document());
}
