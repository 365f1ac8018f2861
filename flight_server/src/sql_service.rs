//! The Flight SQL protocol: statements and catalog metadata, over the arrow-rs
//! `FlightSqlService` trait.

use crate::error::FlightError;
use crate::query::{self, CATALOG_NAME, SCHEMA_NAME};
use crate::state::State;
use crate::store::arrow_schema;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandStatementQuery, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use std::pin::Pin;
use std::sync::LazyLock;
use tonic::{Request, Response, Status, Streaming};

type DoGetStream = <SqlService as FlightService>::DoGetStream;

static SQL_INFO: LazyLock<Result<SqlInfoData, String>> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "barecount-flight");
    b.append(SqlInfo::FlightSqlServerVersion, barecount_core::VERSION);
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.build().map_err(|e| e.to_string())
});

fn sql_info() -> Result<&'static SqlInfoData, Status> {
    SQL_INFO.as_ref().map_err(|e| Status::internal(e.clone()))
}

#[derive(Debug, Clone)]
pub struct SqlService {
    pub state: State,
}

/// A FlightInfo whose single endpoint's ticket is `ticket`.
pub fn flight_info(
    schema: &arrow::datatypes::Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    Ok(FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("cannot encode schema: {e}")))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor))
}

/// The FlightInfo of a metadata command: its result schema, and the command itself as ticket.
fn metadata_info<M: ProstMessageExt>(
    command: &M,
    schema: &arrow::datatypes::Schema,
    request: Request<FlightDescriptor>,
) -> Result<Response<FlightInfo>, Status> {
    Ok(Response::new(flight_info(
        schema,
        command.as_any().encode_to_vec(),
        request.into_inner(),
    )?))
}

/// Encodes batches of a known schema as a Flight data stream.
pub fn encode_stream<S>(schema: SchemaRef, batches: S) -> DoGetStream
where
    S: Stream<Item = Result<RecordBatch, arrow_flight::error::FlightError>> + Send + 'static,
{
    Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from),
    )
}

fn one_batch<E: Into<arrow_flight::error::FlightError>>(
    schema: SchemaRef,
    batch: Result<RecordBatch, E>,
) -> DoGetStream {
    let batch = batch.map_err(Into::into);
    encode_stream(schema, futures::stream::once(async move { batch }))
}

impl SqlService {
    /// Plans `sql` for the caller's tenant and returns a FlightInfo with a signed ticket.
    pub async fn statement_info(
        &self,
        sql: &str,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let ctx = self.state.session().await?;
        let schema = query::plan_schema(&ctx, sql).await?;
        let signed = self.state.signer.sign(self.state.tenant(), sql)?;
        let ticket = TicketStatementQuery {
            statement_handle: signed.into_bytes().into(),
        };
        flight_info(&schema, ticket.as_any().encode_to_vec(), descriptor)
    }

    /// Runs the query a signed ticket carries, after checking it belongs to the caller's tenant.
    pub async fn run_ticket(&self, handle: &[u8]) -> Result<DoGetStream, Status> {
        let claims = self.state.signer.verify(handle)?;
        if claims.tenant != self.state.tenant() {
            return Err(Status::permission_denied(
                "ticket was issued for another tenant",
            ));
        }
        let ctx = self.state.session().await?;
        let schema = query::plan_schema(&ctx, &claims.sql).await?;
        let batches = query::collect(&ctx, &claims.sql).await?;
        // Rows served count against the tenant's plan before any leave the server.
        let rows = batches.iter().map(RecordBatch::num_rows).sum();
        let bytes = batches.iter().map(RecordBatch::get_array_memory_size).sum();
        self.state.charge_read(rows, bytes).await?;
        let out_schema = schema.clone();
        let batches = futures::stream::iter(batches).map(move |b| {
            // Serve exactly the advertised schema (field names, types and nullability).
            RecordBatch::try_new(out_schema.clone(), b.columns().to_vec()).map_err(Into::into)
        });
        Ok(encode_stream(schema, batches))
    }
}

#[tonic::async_trait]
impl FlightSqlService for SqlService {
    type FlightService = SqlService;

    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        // Authentication arrives with tokens; until then the handshake succeeds without one.
        let out = futures::stream::once(async {
            Ok(HandshakeResponse {
                protocol_version: 0,
                payload: Default::default(),
            })
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Ok(Response::new(
            self.statement_info(&query.query, request.into_inner())
                .await?,
        ))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        Ok(Response::new(
            self.run_ticket(&ticket.statement_handle).await?,
        ))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        metadata_info(&query, &schema, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append(CATALOG_NAME);
        let schema = b.schema();
        Ok(Response::new(one_batch(schema, b.build())))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        metadata_info(&query, &schema, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append(CATALOG_NAME, SCHEMA_NAME);
        let schema = b.schema();
        Ok(Response::new(one_batch(schema, b.build())))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        metadata_info(&query, &schema, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let catalog = self.state.catalog().await?;
        let mut b = query.into_builder();
        for v in catalog.latest() {
            b.append(
                CATALOG_NAME,
                SCHEMA_NAME,
                &v.dataset,
                "TABLE",
                &arrow_schema(v),
            )
            .map_err(FlightError::from)?;
        }
        for v in &catalog.versions {
            b.append(
                CATALOG_NAME,
                SCHEMA_NAME,
                v.pinned_name(),
                "TABLE",
                &arrow_schema(v),
            )
            .map_err(FlightError::from)?;
        }
        let schema = b.schema();
        Ok(Response::new(one_batch(schema, b.build())))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        metadata_info(&query, &schema, request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append("TABLE");
        let schema = b.schema();
        Ok(Response::new(one_batch(schema, b.build())))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(sql_info()?).schema();
        metadata_info(&query, &schema, request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let b = query.into_builder(sql_info()?);
        let schema = b.schema();
        Ok(Response::new(one_batch(schema, b.build())))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let types = crate::xdbc::TYPES
            .as_ref()
            .map_err(|e| Status::internal(e.clone()))?;
        let schema = query.into_builder(types).schema();
        metadata_info(&query, &schema, request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let types = crate::xdbc::TYPES
            .as_ref()
            .map_err(|e| Status::internal(e.clone()))?;
        let b = query.into_builder(types);
        let schema = b.schema();
        Ok(Response::new(one_batch(schema, b.build())))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Decodes a command descriptor's statement query, if it is one.
pub fn statement_query(cmd: &[u8]) -> Option<String> {
    let any = arrow_flight::sql::Any::decode(cmd).ok()?;
    let q: CommandStatementQuery = any.unpack().ok()??;
    Some(q.query)
}
