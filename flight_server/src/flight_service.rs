//! The tonic `FlightService`: plain Flight for pyarrow-style clients (ListFlights, GetFlightInfo
//! and GetSchema on path descriptors such as `sales` or `sales/3`), everything else handed to
//! the Flight SQL layer.

use crate::catalog::VersionInfo;
use crate::error::FlightError;
use crate::sql_service::{flight_info, statement_query, SqlService};
use crate::store::arrow_schema;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use arrow_flight::{
    Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, PollInfo,
    SchemaAsIpc, SchemaResult, Ticket,
};
use barecount_core::ident::quote_ident;
use prost::Message;
use serde_json::json;
use tonic::{Request, Response, Status, Streaming};

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
    fn version_info(&self, v: &VersionInfo) -> Result<FlightInfo, Status> {
        let sql = format!("SELECT * FROM {}", quote_ident(&v.pinned_name()));
        let signed = self.sql.state.signer.sign(self.sql.state.tenant(), &sql)?;
        let ticket = TicketStatementQuery {
            statement_handle: signed.into_bytes().into(),
        };
        let descriptor = FlightDescriptor::new_path(vec![v.dataset.clone(), v.version.to_string()]);
        let meta = json!({
            "dataset": v.dataset,
            "version": v.version,
            "row_count": v.row_count,
            "content_hash": v.content_hash,
            "ledger_seq": v.ledger_seq,
            "ledger_hash": v.ledger_hash,
        });
        Ok(flight_info(
            &arrow_schema(v),
            ticket.as_any().encode_to_vec(),
            descriptor,
        )?
        .with_total_records(v.row_count)
        .with_ordered(false)
        .with_app_metadata(meta.to_string().into_bytes()))
    }
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
        FlightService::handshake(&self.sql, request).await
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let catalog = self.sql.state.catalog().await?;
        let infos: Vec<Result<FlightInfo, Status>> =
            catalog.latest().map(|v| self.version_info(v)).collect();
        Ok(Response::new(Box::pin(futures::stream::iter(infos))))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let d = request.get_ref();
        if d.r#type == DescriptorType::Path as i32 {
            let (ds, version) = parse_path(&d.path)?;
            let catalog = self.sql.state.catalog().await?;
            let v = catalog.find(&ds, version)?;
            return Ok(Response::new(self.version_info(v)?));
        }
        FlightService::get_flight_info(&self.sql, request).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        FlightService::poll_flight_info(&self.sql, request).await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let d = request.into_inner();
        let schema = if d.r#type == DescriptorType::Path as i32 {
            let (ds, version) = parse_path(&d.path)?;
            let catalog = self.sql.state.catalog().await?;
            arrow_schema(catalog.find(&ds, version)?)
        } else {
            let sql = statement_query(&d.cmd).ok_or_else(|| {
                Status::invalid_argument(
                    "GetSchema takes a path descriptor or a CommandStatementQuery",
                )
            })?;
            let ctx = self.sql.state.session().await?;
            crate::query::plan_schema(&ctx, &sql).await?
        };
        let options = arrow::ipc::writer::IpcWriteOptions::default();
        let result: SchemaResult = SchemaAsIpc::new(&schema, &options)
            .try_into()
            .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
        Ok(Response::new(result))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        FlightService::do_get(&self.sql, request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        FlightService::do_put(&self.sql, request).await
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        FlightService::do_action(&self.sql, request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        FlightService::list_actions(&self.sql, request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        FlightService::do_exchange(&self.sql, request).await
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
