//! The local API Gateway: an HTTP API (payload format 2.0) with the routes
//! `infra/template.yaml` gives each function, in front of the local
//! Lambda. A request matches the most specific route (literal segments
//! before `{param}`, `{proxy+}` last, a method before `ANY`), becomes the
//! v2 event API Gateway sends (cookies apart, headers lowercased and
//! joined, the raw query, path parameters, a base64 body unless it is
//! text), and the function's answer becomes the response. No route: 404
//! `Not Found`; a function error: 500 `Internal Server Error`; past the
//! integration's 30 s: 503, as API Gateway answers them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value, json};

use crate::lambda::{LocalLambda, Outcome};
use crate::template::{ACCOUNT, Route};

/// API Gateway's limits: the request body, the integration's time.
const BODY_LIMIT: usize = 10 * 1024 * 1024;
const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(30);

/// A route and the function it invokes.
#[derive(Debug, Clone)]
pub struct Target {
    pub route: Route,
    pub function: String,
}

#[derive(Clone)]
pub struct Gateway {
    pub api_id: String,
    pub targets: Vec<Target>,
    pub lambda: LocalLambda,
}

impl Gateway {
    /// The service: every request goes through the route table.
    pub fn router(self) -> axum::Router {
        axum::Router::new().fallback(handle).with_state(self)
    }

    /// The target `method path` reaches, with its path parameters.
    pub fn route(&self, method: &str, path: &str) -> Option<(&Target, Map<String, Value>)> {
        // Most specific first: no greedy parameter, more literal
        // segments, a method rather than ANY.
        type Rank = (bool, usize, bool);
        let mut best: Option<(Rank, &Target, Map<String, Value>)> = None;
        for target in &self.targets {
            let r = &target.route;
            if r.method != "ANY" && r.method != method {
                continue;
            }
            let Some((literals, greedy, params)) = matches(&r.path, path) else {
                continue;
            };
            let rank = (!greedy, literals, r.method != "ANY");
            if best.as_ref().is_none_or(|(b, _, _)| rank > *b) {
                best = Some((rank, target, params));
            }
        }
        best.map(|(_, t, p)| (t, p))
    }
}

/// Whether `path` fits `template`: its literal segments, whether it took a
/// greedy `{proxy+}`, and the parameters.
fn matches(template: &str, path: &str) -> Option<(usize, bool, Map<String, Value>)> {
    let want: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let got: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let mut params = Map::new();
    let mut literals = 0;
    for (i, segment) in want.iter().enumerate() {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix("+}")) {
            let rest = got.get(i..)?.join("/");
            if rest.is_empty() {
                return None;
            }
            params.insert(name.to_owned(), Value::String(decode(&rest)));
            return Some((literals, true, params));
        }
        let actual = got.get(i)?;
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if actual.is_empty() {
                return None;
            }
            params.insert(name.to_owned(), Value::String(decode(actual)));
        } else if segment == actual {
            literals += 1;
        } else {
            return None;
        }
    }
    (got.len() == want.len()).then_some((literals, false, params))
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({ "message": text }))).into_response()
}

/// Bodies API Gateway passes as text; anything else is base64.
fn is_text(headers: &HeaderMap) -> bool {
    let kind = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    kind.starts_with("text/")
        || kind.contains("json")
        || kind.contains("xml")
        || kind.contains("javascript")
        || kind.starts_with("application/x-www-form-urlencoded")
}

async fn handle(State(gateway): State<Gateway>, request: Request) -> Response {
    let started = Instant::now();
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let (parts, body) = request.into_parts();
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let request_id = uuid::Uuid::new_v4().to_string();
    let Some((target, params)) = gateway.route(&method, &path) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => return message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large"),
    };
    let route_key = format!("{} {}", target.route.method, target.route.path);
    let event = event(
        &gateway.api_id,
        &request_id,
        &route_key,
        &parts,
        &peer,
        params,
        &body,
    );
    let invoked = tokio::time::timeout(
        INTEGRATION_TIMEOUT,
        gateway
            .lambda
            .invoke(&target.function, Bytes::from(event.to_string())),
    )
    .await;
    let response = match invoked {
        Err(_) => message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
        Ok(Err(e)) => {
            tracing::error!(function = %target.function, error = %e, "API Gateway could not invoke the function");
            message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
        Ok(Ok(Outcome::Response(payload))) => response(&payload)
            .unwrap_or_else(|| message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")),
        Ok(Ok(failed)) => {
            tracing::warn!(function = %target.function, error = %failed.error_payload(), "the function failed a request");
            message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
    };
    let mut response = response;
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("apigw-requestid", id);
    }
    tracing::debug!(
        requestId = %request_id, ip = %peer, method, path, status = response.status().as_u16(),
        latency = started.elapsed().as_millis() as u64, "API Gateway"
    );
    response
}

/// The payload format 2.0 event of a request.
fn event(
    api_id: &str,
    request_id: &str,
    route_key: &str,
    parts: &axum::http::request::Parts,
    peer: &str,
    params: Map<String, Value>,
    body: &[u8],
) -> Value {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == "cookie" {
            cookies.extend(
                value
                    .split(';')
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty()),
            );
            continue;
        }
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    let raw_query = parts.uri.query().unwrap_or("").to_owned();
    let mut query = Map::new();
    for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
        match query.get_mut(k.as_ref()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            _ => {
                query.insert(k.into_owned(), Value::String(v.into_owned()));
            }
        }
    }
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let now = chrono::Utc::now();
    let text = is_text(&parts.headers) && std::str::from_utf8(body).is_ok();
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": parts.uri.path(),
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": api_id,
            "domainName": host,
            "domainPrefix": host.split('.').next().unwrap_or_default(),
            "http": {
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": peer,
                "userAgent": parts.headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or(""),
            },
            "requestId": request_id,
            "routeKey": route_key,
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "isBase64Encoded": !body.is_empty() && !text,
    });
    let map = event.as_object_mut().expect("an object");
    if !cookies.is_empty() {
        map.insert("cookies".into(), json!(cookies));
    }
    if !query.is_empty() {
        map.insert("queryStringParameters".into(), Value::Object(query));
    }
    if !params.is_empty() {
        map.insert("pathParameters".into(), Value::Object(params));
    }
    if !body.is_empty() {
        let body = if text {
            String::from_utf8_lossy(body).into_owned()
        } else {
            base64::engine::general_purpose::STANDARD.encode(body)
        };
        map.insert("body".into(), Value::String(body));
    }
    event
}

/// The function's answer as an HTTP response: a `{statusCode, headers,
/// cookies, body, isBase64Encoded}` object, else (format 2.0's inference)
/// the payload itself as a JSON 200.
fn response(payload: &[u8]) -> Option<Response> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    let Some(status) = value.get("statusCode").and_then(Value::as_u64) else {
        return Some(
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                Body::from(payload.to_vec()),
            )
                .into_response(),
        );
    };
    let mut builder = Response::builder().status(StatusCode::from_u16(status as u16).ok()?);
    let headers = builder.headers_mut()?;
    if let Some(map) = value.get("headers").and_then(Value::as_object) {
        for (k, v) in map {
            if let (Ok(name), Some(Ok(v))) = (
                HeaderName::from_bytes(k.as_bytes()),
                v.as_str().map(HeaderValue::from_str),
            ) {
                headers.insert(name, v);
            }
        }
    }
    if let Some(map) = value.get("multiValueHeaders").and_then(Value::as_object) {
        for (k, values) in map {
            let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
                continue;
            };
            headers.remove(&name);
            for v in values.as_array().into_iter().flatten() {
                if let Some(Ok(v)) = v.as_str().map(HeaderValue::from_str) {
                    headers.append(name.clone(), v);
                }
            }
        }
    }
    for cookie in value
        .get("cookies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(Ok(v)) = cookie.as_str().map(HeaderValue::from_str) {
            headers.append("set-cookie", v);
        }
    }
    let body = value.get("body").and_then(Value::as_str).unwrap_or("");
    let body = if value.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .ok()?
    } else {
        body.as_bytes().to_vec()
    };
    builder.body(Body::from(body)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str, function: &str) -> Target {
        Target {
            route: Route {
                method: method.into(),
                path: path.into(),
            },
            function: function.into(),
        }
    }

    fn table() -> Vec<Target> {
        vec![
            route("GET", "/apps/{app}/envs/{env}", "formation"),
            route("DELETE", "/apps/{app}/envs/{env}", "cycle"),
            route("ANY", "/apps/{app}/envs/{env}/deploys", "deploy"),
            route("GET", "/apps/{app}/envs/{env}/deploys/{id}", "deploy-one"),
            route("GET", "/ui", "ui"),
            route("ANY", "/ui/{proxy+}", "ui-pages"),
            route("GET", "/", "root"),
        ]
    }

    fn pick(method: &str, path: &str) -> Option<(String, Map<String, Value>)> {
        let gateway = Gateway {
            api_id: "local".into(),
            targets: table(),
            lambda: LocalLambda::new(vec![], &std::env::temp_dir(), 1.0, None).unwrap(),
        };
        gateway
            .route(method, path)
            .map(|(t, p)| (t.function.clone(), p))
    }

    #[test]
    fn a_request_reaches_the_route_of_its_method_and_path_with_its_parameters() {
        let (f, p) = pick("DELETE", "/apps/a/envs/b").unwrap();
        assert_eq!(f, "cycle");
        assert_eq!(p["app"], "a");
        assert_eq!(pick("GET", "/apps/a/envs/b").unwrap().0, "formation");
        assert_eq!(pick("POST", "/apps/a/envs/b/deploys").unwrap().0, "deploy");
        assert_eq!(
            pick("GET", "/apps/a/envs/b/deploys/d1").unwrap().1["id"],
            "d1"
        );
        assert_eq!(pick("GET", "/").unwrap().0, "root");
    }

    #[test]
    fn a_greedy_route_takes_the_rest_of_the_path_and_nothing_else_matches_no_route() {
        let (f, p) = pick("POST", "/ui/apps/a/envs/b/deploys").unwrap();
        assert_eq!(f, "ui-pages");
        assert_eq!(p["proxy"], "apps/a/envs/b/deploys");
        assert_eq!(pick("GET", "/ui").unwrap().0, "ui");
        assert!(pick("POST", "/apps/a/envs/b").is_none());
        assert!(pick("GET", "/apps/a/envs/b/nothing").is_none());
        assert!(pick("GET", "/apps//envs/b").is_none());
    }

    #[test]
    fn a_function_answer_becomes_the_response_with_its_headers_and_cookies() {
        let r = response(
            br#"{"statusCode":201,"headers":{"content-type":"text/plain"},"cookies":["a=1"],"body":"aGk=","isBase64Encoded":true}"#,
        )
        .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["content-type"], "text/plain");
        assert_eq!(r.headers()["set-cookie"], "a=1");
        let r = response(br#"{"hello":"there"}"#).unwrap();
        assert_eq!(r.status(), 200);
    }

    #[test]
    fn the_event_carries_cookies_apart_joined_headers_and_a_binary_body_in_base64() {
        let request = axum::http::Request::post("/apps/a/envs/b/deploys?limit=5&x=1&x=2")
            .header("cookie", "a=1; b=2")
            .header("x-many", "1")
            .header("x-many", "2")
            .header("content-type", "application/octet-stream")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let mut params = Map::new();
        params.insert("app".into(), json!("a"));
        let e = event(
            "api",
            "rid",
            "ANY /apps/{app}/envs/{env}/deploys",
            &parts,
            "10.0.0.1",
            params,
            &[0, 159],
        );
        assert_eq!(e["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(e["headers"]["x-many"], "1,2");
        assert!(e["headers"].get("cookie").is_none());
        assert_eq!(e["queryStringParameters"]["x"], "1,2");
        assert_eq!(e["rawQueryString"], "limit=5&x=1&x=2");
        assert_eq!(e["isBase64Encoded"], true);
        assert_eq!(e["body"], "AJ8=");
        assert_eq!(e["pathParameters"]["app"], "a");
        assert_eq!(e["requestContext"]["http"]["sourceIp"], "10.0.0.1");
    }
}
