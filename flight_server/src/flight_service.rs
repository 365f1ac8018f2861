//! The tonic `FlightService`: plain Flight for pyarrow-style clients (ListFlights, GetFlightInfo
//! and GetSchema on path descriptors such as `sales` or `sales/3`), everything else handed to
//! the Flight SQL layer.

use crate::auth::Caller;
use crate::catalog::VersionInfo;
use crate::error::FlightError;
use crate::session_options;
use crate::sql_service::{descriptor_command, sql_has_params, DescribedCommand, SqlService};
use crate::store::arrow_schema;
use crate::store::BATCH_ROWS;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest,
    HandshakeResponse, PollInfo, SchemaAsIpc, SchemaResult, Ticket,
};
use prost::Message;
use std::sync::Arc;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

/// The standard Flight action ADBC sends when a connection closes.
const CLOSE_SESSION: &str = "CloseSession";

/// `CloseSessionResult { status: CLOSED }` as protobuf: field 1 (varint) = 1.
const CLOSE_SESSION_CLOSED: &[u8] = &[0x08, 0x01];

#[derive(Debug, Clone)]
pub struct BareCountFlight {
    pub sql: SqlService,
}

/// Parses a path descriptor: `[dataset]` or `[dataset, version]` (`3` or `v3`).
pub fn parse_path(path: &[String]) -> Result<(String, Option<i32>), FlightError> {
    match path {
        [ds] => Ok((ds.clone(), None)),
        [ds, v] => {
            let n = v.trim_start_matches('v').parse::<i32>().map_err(|_| {
                FlightError::InvalidRequest(format!(
                    "version \"{v}\" of dataset \"{ds}\" is not a number"
                ))
            })?;
            Ok((ds.clone(), Some(n)))
        }
        _ => Err(FlightError::InvalidRequest(
            "path descriptors are [dataset] or [dataset, version]".into(),
        )),
    }
}

impl BareCountFlight {
    /// Runs one call inside a tracing span and records it in the metrics.
    async fn observed<T, F>(&self, method: &'static str, call: F) -> Result<T, Status>
    where
        F: std::future::Future<Output = Result<T, Status>>,
    {
        let started = std::time::Instant::now();
        let span = tracing::info_span!("flight", method);
        let result = call.instrument(span.clone()).await;
        let seconds = started.elapsed().as_secs_f64();
        let code = result.as_ref().err().map(Status::code);
        self.sql.state.metrics.observe(method, seconds, code);
        span.in_scope(|| match &result {
            Ok(_) => tracing::debug!(seconds, "answered"),
            Err(s) => tracing::info!(seconds, code = ?s.code(), message = s.message(), "refused"),
        });
        result
    }

    /// Authenticates a request and attaches the caller for the Flight SQL layer.
    async fn authenticated<T>(
        &self,
        mut request: Request<T>,
    ) -> Result<(Caller, Request<T>), Status> {
        let caller = self.sql.state.authenticate(&request).await?;
        request.extensions_mut().insert(caller.clone());
        Ok((caller, request))
    }

    fn version_info(&self, caller: &Caller, v: &VersionInfo) -> Result<FlightInfo, Status> {
        let descriptor = FlightDescriptor::new_path(vec![v.dataset.clone(), v.version.to_string()]);
        self.sql.dataset_info(caller, v, descriptor)
    }
}

/// How many store batches a version of `rows` rows has.
pub fn batch_count(rows: i64) -> usize {
    let rows = usize::try_from(rows).unwrap_or(0);
    rows.div_ceil(BATCH_ROWS)
}

type Stream<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl FlightService for BareCountFlight {
    type HandshakeStream = <SqlService as FlightService>::HandshakeStream;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = <SqlService as FlightService>::DoGetStream;
    type DoPutStream = <SqlService as FlightService>::DoPutStream;
    type DoActionStream = <SqlService as FlightService>::DoActionStream;
    type ListActionsStream = <SqlService as FlightService>::ListActionsStream;
    type DoExchangeStream = <SqlService as FlightService>::DoExchangeStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        self.observed("handshake", async move {
            let caller = self.sql.state.authenticate(&request).await?;
            let token =
                self.sql
                    .state
                    .signer
                    .session(&caller.tenant, &caller.subject, &caller.scopes)?;
            let bearer = MetadataValue::try_from(format!("Bearer {token}")).map_err(|e| {
                Status::internal(format!("session token is not a header value: {e}"))
            })?;
            let out = futures::stream::once(async move {
                Ok(HandshakeResponse {
                    protocol_version: 0,
                    payload: token.into_bytes().into(),
                })
            });
            let mut response: Response<Self::HandshakeStream> = Response::new(Box::pin(out));
            response.metadata_mut().insert("authorization", bearer);
            Ok(response)
        })
        .await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        self.observed("list_flights", async move {
            let (caller, _) = self.authenticated(request).await?;
            caller.require("read")?;
            let catalog = self.sql.state.catalog(&caller.tenant).await?;
            let infos: Vec<Result<FlightInfo, Status>> = catalog
                .latest()
                .map(|v| self.version_info(&caller, v))
                .collect();
            let stream: Self::ListFlightsStream = Box::pin(futures::stream::iter(infos));
            Ok(Response::new(stream))
        })
        .await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.observed("get_flight_info", async move {
            let (caller, request) = self.authenticated(request).await?;
            let d = request.get_ref();
            if d.r#type == DescriptorType::Path as i32 {
                caller.require("read")?;
                let (ds, version) = parse_path(&d.path)?;
                let catalog = self.sql.state.catalog(&caller.tenant).await?;
                let v = catalog.find(&ds, version)?;
                return Ok(Response::new(self.version_info(&caller, v)?));
            }
            FlightService::get_flight_info(&self.sql, request).await
        })
        .await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.observed("poll_flight_info", async move {
            let (_, request) = self.authenticated(request).await?;
            FlightService::poll_flight_info(&self.sql, request).await
        })
        .await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        self.observed("get_schema", async move {
            let (caller, request) = self.authenticated(request).await?;
            caller.require("read")?;
            let d = request.into_inner();
            let schema = if d.r#type == DescriptorType::Path as i32 {
                let (ds, version) = parse_path(&d.path)?;
                let catalog = self.sql.state.catalog(&caller.tenant).await?;
                arrow_schema(catalog.find(&ds, version)?)
            } else {
                let (sql, params) = match descriptor_command(&d.cmd) {
                    Some(DescribedCommand::Statement(sql)) => (sql, None),
                    Some(DescribedCommand::Prepared(handle)) => {
                        let claims = self.sql.prepared(&caller, &handle)?;
                        (claims.sql, claims.params)
                    }
                    None => {
                        return Err(Status::invalid_argument(
                            "GetSchema takes a path descriptor, a CommandStatementQuery or a \
                             CommandPreparedStatementQuery",
                        ))
                    }
                };
                let ctx = self.sql.state.session(&caller.tenant).await?;
                if params.is_none() && sql_has_params(&ctx, &sql).await? {
                    // A prepared SELECT not bound yet: its logical schema.
                    let df = crate::query::plan(&ctx, &sql).await?;
                    Arc::new(df.schema().as_arrow().clone())
                } else {
                    crate::query::plan_schema(&ctx, &sql, params.as_deref()).await?
                }
            };
            let options = arrow::ipc::writer::IpcWriteOptions::default();
            let result: SchemaResult = SchemaAsIpc::new(&schema, &options)
                .try_into()
                .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
            Ok(Response::new(result))
        })
        .await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        self.observed("do_get", async move {
            let (_, request) = self.authenticated(request).await?;
            FlightService::do_get(&self.sql, request).await
        })
        .await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        self.observed("do_put", async move {
            let (_, request) = self.authenticated(request).await?;
            FlightService::do_put(&self.sql, request).await
        })
        .await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.observed("do_action", async move {
            let (caller, request) = self.authenticated(request).await?;
            if request.get_ref().r#type == CLOSE_SESSION {
                // sessions are stateless signed tokens: closing frees nothing and always
                // succeeds (what ADBC sends on every disconnect)
                let closed = arrow_flight::Result {
                    body: bytes::Bytes::from_static(CLOSE_SESSION_CLOSED),
                };
                let stream: Self::DoActionStream =
                    Box::pin(futures::stream::once(async move { Ok(closed) }));
                return Ok(Response::new(stream));
            }
            let kind = request.get_ref().r#type.as_str();
            if kind == session_options::SET_ACTION || kind == session_options::GET_ACTION {
                let body = if kind == session_options::SET_ACTION {
                    let req = session_options::SetSessionOptionsRequest::decode(
                        request.get_ref().body.as_ref(),
                    )
                    .map_err(|e| {
                        FlightError::InvalidRequest(format!(
                            "SetSessionOptions: not a SetSessionOptionsRequest: {e}"
                        ))
                    })?;
                    session_options::set(&req).encode_to_vec()
                } else {
                    session_options::current().encode_to_vec()
                };
                let answer = arrow_flight::Result { body: body.into() };
                let stream: Self::DoActionStream =
                    Box::pin(futures::stream::once(async move { Ok(answer) }));
                return Ok(Response::new(stream));
            }
            if request.get_ref().r#type == crate::export::ACTION {
                let req = crate::export::ExportRequest::parse(&request.get_ref().body)?;
                let stream: Self::DoActionStream = self.sql.export(&caller, req).await?;
                return Ok(Response::new(stream));
            }
            FlightService::do_action(&self.sql, request).await
        })
        .await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.observed("list_actions", async move {
            let (_, request) = self.authenticated(request).await?;
            let inner = FlightService::list_actions(&self.sql, request)
                .await?
                .into_inner();
            let export = arrow_flight::ActionType {
                r#type: crate::export::ACTION.into(),
                description: "Write a dataset version or a query result as parquet, csv or arrow \
                              to the export directory; JSON body {\"dataset\"|\"query\", \"version\"?, \
                              \"format\", \"name\"?}; streams progress, then the receipt"
                    .into(),
            };
            let stream: Self::ListActionsStream =
                Box::pin(futures::StreamExt::chain(inner, futures::stream::once(async move { Ok(export) })));
            Ok(Response::new(stream))
        })
        .await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.observed("do_exchange", async move {
            let (_, request) = self.authenticated(request).await?;
            FlightService::do_exchange(&self.sql, request).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths() {
        assert_eq!(
            parse_path(&["sales".into()]).unwrap(),
            ("sales".into(), None)
        );
        assert_eq!(
            parse_path(&["sales".into(), "3".into()]).unwrap(),
            ("sales".into(), Some(3))
        );
        assert_eq!(
            parse_path(&["sales".into(), "v2".into()]).unwrap(),
            ("sales".into(), Some(2))
        );
        assert!(parse_path(&["sales".into(), "x".into()]).is_err());
        assert!(parse_path(&[]).is_err());
    }
}
