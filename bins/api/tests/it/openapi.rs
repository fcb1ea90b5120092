//! The served OpenAPI document describes exactly the registered routes.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};

use crate::{Db, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_exactly_the_registered_routes() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let (status, doc) = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let registered: BTreeSet<(String, String)> = tollgate_api::routes::registered()
        .into_iter()
        .map(|(m, p)| (m.as_str().to_owned(), p.to_owned()))
        .collect();
    let missing: Vec<_> = registered.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&registered).collect();
    assert!(
        missing.is_empty(),
        "registered but not documented: {missing:?}"
    );
    assert!(extra.is_empty(), "documented but not registered: {extra:?}");

    // And the server really routes each of them (a 404 here would be an unknown-route
    // 404, whose message names the route).
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", &uuid::Uuid::now_v7().to_string())
            .replace("{entity}", "e")
            .replace("{entity_id}", "1");
        let (status, body) = app
            .call(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &concrete,
                None,
                None,
            )
            .await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("no route"),
            "{method} {path} is documented but not routed"
        );
    }
    // Every operation documents its error envelope or is open.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let secured = op.get("security").is_some();
            let responses = op["responses"].as_object().unwrap();
            assert!(
                !secured || responses.contains_key("401"),
                "{method} {path} lacks its 401"
            );
        }
    }
    app.stop().await;
}

/// `docs/api.md`'s route index and route reference are generated from the OpenAPI
/// document, so that the page a reader has without a server says exactly what the
/// server does. Run with `TOLLGATE_BLESS=1` to rewrite them after changing a route.
#[test]
fn docs_api_md_is_the_openapi_document() {
    use utoipa::OpenApi;
    let doc = serde_json::to_value(tollgate_api::openapi::ApiDoc::openapi()).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
    let page = std::fs::read_to_string(path).unwrap();
    let mut wanted = page.clone();
    for (name, text) in [
        ("index", route_index(&doc)),
        ("reference", route_reference(&doc)),
    ] {
        let begin = format!(
            "<!-- generated:{name} (cargo xtask test regenerates it with TOLLGATE_BLESS=1) -->\n"
        );
        let end = format!("<!-- end:{name} -->");
        let start = wanted
            .find(&begin)
            .unwrap_or_else(|| panic!("docs/api.md lacks the line {begin:?}"))
            + begin.len();
        let stop = start
            + wanted[start..]
                .find(&end)
                .unwrap_or_else(|| panic!("docs/api.md lacks {end:?}"));
        wanted.replace_range(start..stop, &text);
    }
    if wanted != page {
        if std::env::var_os("TOLLGATE_BLESS").is_some() {
            std::fs::write(path, &wanted).unwrap();
        } else {
            let line = page
                .lines()
                .zip(wanted.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(page.lines().count().min(wanted.lines().count()));
            panic!(
                "docs/api.md differs from the OpenAPI document from line {}: run \
                 `TOLLGATE_BLESS=1 cargo test -p tollgate-api --test it docs_api_md` and commit the page",
                line + 1
            );
        }
    }
}

/// The operations in document order: (method, path, operation).
fn operations(doc: &serde_json::Value) -> Vec<(String, &str, &serde_json::Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete"] {
            if let Some(op) = item.get(method) {
                out.push((method.to_uppercase(), path.as_str(), op));
            }
        }
    }
    // Grouped by tag, in the order the document lists its tags.
    let tags: Vec<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    out.sort_by_key(|(_, _, op)| {
        let tag = op["tags"][0].as_str().unwrap_or("");
        tags.iter().position(|t| *t == tag).unwrap_or(usize::MAX)
    });
    out
}

/// Who may call an operation, from its security requirement's role list.
fn who(op: &serde_json::Value) -> String {
    let Some(requirement) = op["security"].get(0) else {
        return "no key".into();
    };
    let roles: Vec<&str> = requirement["bearer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    if roles.is_empty() {
        return "any key".into();
    }
    roles
        .iter()
        .map(|r| match *r {
            "approver" => "an approver of the request".to_owned(),
            role => format!("`{role}`"),
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

fn one_line(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn first_sentence(text: &str) -> &str {
    text.find(". ").map_or(text, |end| &text[..=end])
}

fn type_of(schema: &serde_json::Value) -> String {
    if let Some(name) = schema["$ref"].as_str() {
        let name = name.rsplit('/').next().unwrap();
        return format!("[`{name}`](#{})", name.to_lowercase());
    }
    if let Some(options) = schema["oneOf"].as_array() {
        let named: Vec<String> = options
            .iter()
            .filter(|o| o["type"] != "null")
            .map(type_of)
            .collect();
        let nullable = options.iter().any(|o| o["type"] == "null");
        return format!(
            "{}{}",
            named.join(" or "),
            if nullable { " or null" } else { "" }
        );
    }
    let (base, nullable) = match &schema["type"] {
        serde_json::Value::String(t) => (t.clone(), false),
        serde_json::Value::Array(ts) => (
            ts.iter()
                .filter(|t| *t != "null")
                .map(|t| t.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
                .join(" or "),
            ts.iter().any(|t| t == "null"),
        ),
        _ => ("any JSON".into(), false),
    };
    let base = match (base.as_str(), schema["format"].as_str()) {
        ("array", _) => format!("array of {}", type_of(&schema["items"])),
        ("string", Some(format @ ("uuid" | "date-time"))) => format!("string ({format})"),
        ("integer", _) => "integer".into(),
        _ => base,
    };
    if nullable {
        format!("{base} or null")
    } else {
        base
    }
}

fn anchor(method: &str, path: &str) -> String {
    format!("{method} {path}")
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
            ' ' => Some('-'),
            _ => None,
        })
        .collect()
}

fn route_index(doc: &serde_json::Value) -> String {
    let mut out = String::from("| route | what | who |\n|---|---|---|\n");
    for (method, path, op) in operations(doc) {
        out += &format!(
            "| [`{method} {path}`](#{}) | {} | {} |\n",
            anchor(&method, path),
            first_sentence(&one_line(op["summary"].as_str().unwrap_or(""))),
            who(op)
        );
    }
    out
}

fn route_reference(doc: &serde_json::Value) -> String {
    let mut out = String::new();
    let mut tag = "";
    for (method, path, op) in operations(doc) {
        let this_tag = op["tags"][0].as_str().unwrap_or("");
        if this_tag != tag {
            tag = this_tag;
            out += &format!("### {tag}\n\n");
        }
        out += &format!("#### `{method} {path}`\n\n");
        let summary = op["summary"].as_str().unwrap_or("");
        let description = op["description"].as_str().unwrap_or("");
        out += &format!("{}\n\n", one_line(&format!("{summary} {description}")));
        out += &format!("Who: {}.\n\n", who(op));
        if let Some(parameters) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
            out += "| parameter | in | type | |\n|---|---|---|---|\n";
            for p in parameters {
                out += &format!(
                    "| `{}` | {}{} | {} | {} |\n",
                    p["name"].as_str().unwrap(),
                    p["in"].as_str().unwrap(),
                    if p["required"] == true {
                        ", required"
                    } else {
                        ""
                    },
                    type_of(&p["schema"]),
                    one_line(p["description"].as_str().unwrap_or(""))
                );
            }
            out += "\n";
        }
        if let Some(body) = op.get("requestBody") {
            let schema = &body["content"]["application/json"]["schema"];
            out += &format!(
                "Body: {}{}.\n\n",
                type_of(schema),
                body["description"]
                    .as_str()
                    .map(|d| format!(": {}", one_line(d)))
                    .unwrap_or_default()
            );
        }
        out += "| answer | body | when |\n|---|---|---|\n";
        for (status, answer) in op["responses"].as_object().unwrap() {
            let body = answer["content"]
                .as_object()
                .and_then(|c| c.values().next())
                .map_or_else(|| "—".into(), |c| type_of(&c["schema"]));
            out += &format!(
                "| `{status}` | {body} | {} |\n",
                one_line(answer["description"].as_str().unwrap_or(""))
            );
        }
        out += "\n";
    }
    // A request body's required fields are marked; answers carry every field (`null`
    // when it has no value).
    let bodies: Vec<&str> = operations(doc)
        .iter()
        .filter_map(|(_, _, op)| {
            op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str()
        })
        .map(|r| r.rsplit('/').next().unwrap())
        .collect();
    out += "### Schemas\n\n";
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        out += &format!("#### {name}\n\n");
        if let Some(description) = schema["description"].as_str() {
            out += &format!("{}\n\n", one_line(description));
        }
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().map(|f| f.as_str().unwrap()).collect())
            .unwrap_or_default();
        out += "| field | type | |\n|---|---|---|\n";
        for (field, property) in schema["properties"].as_object().unwrap() {
            let description = property["description"]
                .as_str()
                .or_else(|| {
                    property["oneOf"]
                        .as_array()
                        .and_then(|o| o.iter().find_map(|x| x["description"].as_str()))
                })
                .unwrap_or("");
            let marked = bodies.contains(&name.as_str()) && required.contains(&field.as_str());
            out += &format!(
                "| `{field}`{} | {} | {} |\n",
                if marked { " (required)" } else { "" },
                type_of(property),
                one_line(description)
            );
        }
        out += "\n";
    }
    out
}

/// The typed client (`crates/client`) has a method for every registered route: each
/// method's doc names its route as "`METHOD /path`", and the set of those is the table's.
#[test]
fn the_typed_client_covers_every_route() {
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/client/src/lib.rs"),
    )
    .unwrap();
    let normalize = |path: &str| {
        let mut out = String::new();
        let mut in_param = false;
        for c in path.chars() {
            match c {
                '{' => {
                    in_param = true;
                    out.push_str("{}");
                }
                '}' => in_param = false,
                c if !in_param => out.push(c),
                _ => {}
            }
        }
        out
    };
    let mut covered = BTreeSet::new();
    for line in source.lines() {
        let Some(doc) = line.trim().strip_prefix("/// `") else {
            continue;
        };
        let Some((route, _)) = doc.split_once('`') else {
            continue;
        };
        if let Some((method, path)) = route.split_once(' ') {
            if ["GET", "POST", "PUT", "DELETE", "PATCH"].contains(&method) {
                covered.insert((method.to_owned(), normalize(path)));
            }
        }
    }
    let registered: BTreeSet<(String, String)> = tollgate_api::routes::registered()
        .into_iter()
        .map(|(m, p)| (m.as_str().to_owned(), normalize(p)))
        .collect();
    let missing: Vec<_> = registered.difference(&covered).collect();
    let unknown: Vec<_> = covered.difference(&registered).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "routes without a client method: {missing:?}; client methods for no route: {unknown:?}"
    );
}
