//! `/mcp`: the Model Context Protocol endpoint (Streamable HTTP) for AI agents.
//!
//! The caller is authenticated here, before any tool can run (a missing or revoked key
//! is a `401` envelope, as on every route). Each tool is then carried out as the REST
//! call the caller's own key could make, sent over the loopback interface to this
//! server, so roles, quorum, self-approval and audit are checked by exactly the code
//! that checks them for every other client — there is no second policy path.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use http_body_util::{BodyExt, Full};
use tollgate_client::Client;
use tollgate_mcp::{Caller as McpCaller, HttpService, Server};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};

/// What `/mcp` needs: the MCP service and a client of this server over loopback.
pub struct Gateway {
    service: HttpService,
    loopback: Client,
    /// Longest a `wait_for_approval` call waits (`--mcp-wait-limit`); `/mcp` requests get
    /// this much more than `--request-timeout`.
    pub wait_limit: Duration,
}

impl Gateway {
    /// The endpoint of a server listening at `addr`; calls through it take at most
    /// `request_timeout` (`wait_timeout` more when they wait for an execution).
    pub fn new(
        addr: std::net::SocketAddr,
        request_timeout: Duration,
        wait_timeout: Duration,
        wait_limit: Duration,
    ) -> anyhow::Result<Self> {
        let host = match addr.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
            ip if ip.is_unspecified() => "[::1]".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            std::net::IpAddr::V4(ip) => ip.to_string(),
        };
        let loopback = Client::builder(format!("http://{host}:{}", addr.port()))
            .timeout(request_timeout + Duration::from_secs(5))
            .wait_timeout(request_timeout + wait_timeout + Duration::from_secs(5))
            .user_agent(concat!("tollgate-mcp/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            service: tollgate_mcp::http_service(Server::per_request().with_max_wait(wait_limit)),
            loopback,
            wait_limit,
        })
    }
}

/// Registers `/mcp` (POST for messages; GET and DELETE answered by the MCP service as a
/// stateless server does). Only a server with a [`Gateway`] registers it: with `--mcp
/// false` the path is unknown (`404`, like any other).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/mcp", web::route().to(serve));
}

/// One MCP HTTP exchange, handed to the MCP service with the authenticated caller.
async fn serve(
    req: HttpRequest,
    caller: Caller,
    body: web::Bytes,
    gateway: web::Data<Gateway>,
) -> ApiResult<HttpResponse> {
    // The extractor accepted this key; the client acts with it.
    let key = crate::auth::bearer_key(&req)?;
    let client = gateway
        .loopback
        .with_key(&key)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let console = {
        let info = req.connection_info();
        format!("{}://{}", info.scheme(), info.host())
    };
    let caller = Arc::new(McpCaller::new(client, caller.0, console));

    let mut request = http::Request::builder()
        .method(req.method().as_str())
        .uri(req.uri().to_string());
    for (name, value) in req.headers() {
        request = request.header(name.as_str(), value.as_bytes());
    }
    let mut request = request
        .body(Full::new(body))
        .map_err(|e| ApiError::bad_request(format!("unreadable MCP request: {e}")))?;
    request.extensions_mut().insert(caller);

    let response = gateway.service.handle(request).await;
    let (parts, body) = response.into_parts();
    let status = StatusCode::from_u16(parts.status.as_u16())
        .map_err(|e| ApiError::internal(format!("MCP status: {e}")))?;
    let mut out = HttpResponse::build(status);
    for (name, value) in &parts.headers {
        out.append_header((name.as_str(), value.as_bytes()));
    }
    Ok(out.streaming(body.into_data_stream()))
}
