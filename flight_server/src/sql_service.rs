//! The Flight SQL protocol: statements and catalog metadata, over the arrow-rs
//! `FlightSqlService` trait.

use crate::auth::Caller;
use crate::catalog::VersionInfo;
use crate::error::FlightError;
use crate::prepared::{encode_params, qmark_to_dollar};
use crate::query::{self, CATALOG_NAME, SCHEMA_NAME};
use crate::state::caller;
use crate::state::State;
use crate::store::{arrow_schema, described_schema};
use crate::ticket::{PreparedClaims, TicketQuery};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::SqlInfoData;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandPreparedStatementUpdate,
    CommandStatementIngest, CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt,
    SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

type DoGetStream = <SqlService as FlightService>::DoGetStream;

fn sql_info() -> Result<&'static SqlInfoData, Status> {
    crate::sql_info::SQL_INFO
        .as_ref()
        .map_err(|e| Status::internal(e.clone()))
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
        caller: &Caller,
        sql: &str,
        params: Option<String>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        caller.require("read")?;
        let (ctx, catalog) = self.state.session_and_catalog(&caller.tenant).await?;
        // planned once: for the whole-version check and, failing that, for the result schema
        let df = query::dataframe(&ctx, sql, params.as_deref()).await?;
        if params.is_none() {
            // A whole version already in the store (`SELECT * FROM sales`) is served straight
            // from it, split over endpoints the client fetches in parallel. Not yet loaded, it
            // goes the general way: one stream, served while it loads.
            if let Some(v) =
                query::whole_version(&df).and_then(|table| catalog.resolve_table(&table))
            {
                if self.state.store.is_present(v) {
                    return self.dataset_info(caller, v, descriptor);
                }
            }
        }
        let schema = df
            .create_physical_plan()
            .await
            .map_err(FlightError::from)?
            .schema();
        let signed = self.state.signer.sign(
            &caller.tenant,
            TicketQuery::Sql {
                sql: sql.to_owned(),
                params,
            },
        )?;
        let ticket = TicketStatementQuery {
            statement_handle: signed.into_bytes().into(),
        };
        flight_info(&schema, ticket.as_any().encode_to_vec(), descriptor)
    }

    /// A whole version as a FlightInfo: its schema, row count and receipt, and one endpoint per
    /// `endpoint_batches` store batches, each with a ticket signed for the caller's tenant and
    /// this exact version (content hash).
    pub fn dataset_info(
        &self,
        caller: &Caller,
        v: &VersionInfo,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let meta = serde_json::json!({
            "dataset": v.dataset,
            "version": v.version,
            "row_count": v.row_count,
            "content_hash": v.content_hash,
            "ledger_seq": v.ledger_seq,
            "ledger_hash": v.ledger_hash,
        });
        let batches = crate::flight_service::batch_count(v.row_count);
        let mut info = FlightInfo::new()
            .try_with_schema(&arrow_schema(v))
            .map_err(|e| Status::internal(format!("cannot encode schema: {e}")))?
            .with_descriptor(descriptor)
            .with_total_records(v.row_count)
            .with_ordered(false)
            .with_app_metadata(meta.to_string().into_bytes());
        let mut first = 0;
        loop {
            // Parallel loads leave a short batch per part, so a version can hold a few more
            // batches than its row count implies: the last endpoint is open-ended.
            let last = first + self.state.endpoint_batches >= batches;
            let end = if last {
                usize::MAX
            } else {
                first + self.state.endpoint_batches
            };
            let signed = self.state.signer.sign(
                &caller.tenant,
                TicketQuery::Dataset {
                    dataset: v.dataset.clone(),
                    version: v.version,
                    content_hash: v.content_hash.clone(),
                    first_batch: first,
                    end_batch: end,
                },
            )?;
            let ticket = TicketStatementQuery {
                statement_handle: signed.into_bytes().into(),
            };
            info = info.with_endpoint(
                FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())),
            );
            if last {
                break;
            }
            first = end;
        }
        Ok(info)
    }

    /// Serves a signed ticket after checking it belongs to the caller's tenant; the tenant's
    /// catalog is read again, so a retired version or a revoked read is refused here too.
    pub async fn run_ticket(&self, caller: &Caller, handle: &[u8]) -> Result<DoGetStream, Status> {
        let claims = self.state.signer.verify(handle)?;
        if claims.tenant != caller.tenant {
            return Err(FlightError::PermissionDenied(
                "ticket was issued for another tenant".into(),
            )
            .into());
        }
        caller.require("read")?;
        match claims.query {
            TicketQuery::Sql { sql, params } => self.run_sql(caller, &sql, params.as_deref()).await,
            TicketQuery::Dataset {
                dataset,
                version,
                content_hash,
                first_batch,
                end_batch,
            } => {
                let catalog = self.state.catalog(&caller.tenant).await?;
                let v = catalog.find(&dataset, Some(version))?;
                if v.content_hash != content_hash {
                    return Err(FlightError::UnknownVersion { dataset, version }.into());
                }
                crate::policy::decide(
                    &self.state.db,
                    caller,
                    "read",
                    std::slice::from_ref(&dataset),
                    serde_json::json!({"rows": v.row_count}),
                )
                .await?;
                // Rows and bytes served count against the plan before any leave the server.
                let (rows, bytes) = self
                    .state
                    .store
                    .range_size(&self.state.db, v, first_batch, end_batch)
                    .await?;
                self.state.charge_read(&caller.tenant, rows, bytes).await?;
                let (schema, batches) = self
                    .state
                    .store
                    .stream(&self.state.db, v, first_batch, end_batch)
                    .await?;
                Ok(encode_stream(
                    schema,
                    batches.map(|b| {
                        b.map_err(|e| arrow_flight::error::FlightError::from(Status::from(e)))
                    }),
                ))
            }
        }
    }

    async fn run_sql(
        &self,
        caller: &Caller,
        sql: &str,
        params: Option<&str>,
    ) -> Result<DoGetStream, Status> {
        let (ctx, catalog) = self.state.session_and_catalog(&caller.tenant).await?;
        // one plan per bound parameter row, their results one after the other
        let mut streams = Vec::new();
        let mut schema = None;
        let dataframes = query::dataframes(&ctx, sql, params).await?;
        let mut tables: Vec<String> = dataframes.iter().flat_map(query::scanned_tables).collect();
        tables.sort();
        tables.dedup();
        crate::policy::decide(
            &self.state.db,
            caller,
            "read",
            &crate::policy::datasets(&catalog, &tables),
            serde_json::json!({}),
        )
        .await?;
        for df in dataframes {
            let plan = df.create_physical_plan().await.map_err(FlightError::from)?;
            schema.get_or_insert_with(|| plan.schema());
            streams.push(
                datafusion::physical_plan::execute_stream(plan, ctx.task_ctx())
                    .map_err(FlightError::from)?,
            );
        }
        let schema = schema.ok_or_else(|| FlightError::InvalidRequest("nothing to run".into()))?;
        let batches = futures::stream::iter(streams)
            .flatten()
            .map(|b| b.map_err(FlightError::from));
        let mut charged = ChargedStream {
            state: self.state.clone(),
            tenant: caller.tenant.clone(),
            schema: schema.clone(),
            inner: Box::pin(batches),
            ready: std::collections::VecDeque::new(),
            done: false,
        };
        // The first chunk is charged before the response starts, so a read past the plan's
        // limit is refused with a status, not a broken stream.
        charged.fill().await?;
        let out = futures::stream::unfold(charged, |mut c| async move {
            match c.next_batch().await {
                Ok(Some(b)) => Some((Ok(b), c)),
                Ok(None) => None,
                Err(e) => {
                    c.done = true;
                    c.ready.clear();
                    Some((
                        Err(arrow_flight::error::FlightError::from(Status::from(e))),
                        c,
                    ))
                }
            }
        });
        Ok(encode_stream(schema, out))
    }

    /// Checks a prepared statement's handle against the caller.
    pub fn prepared(&self, caller: &Caller, handle: &[u8]) -> Result<PreparedClaims, Status> {
        let claims = self.state.signer.verify_prepared(handle)?;
        if claims.tenant != caller.tenant {
            return Err(FlightError::PermissionDenied(
                "prepared statement belongs to another tenant".into(),
            )
            .into());
        }
        Ok(claims)
    }
}

/// Rows read before they are charged against the tenant's plan and served.
const CHARGE_ROWS: usize = 1 << 20;

/// A query's batches, charged in chunks of `CHARGE_ROWS` before they leave the server: memory
/// stays at one chunk, and metering at one round trip per chunk.
struct ChargedStream {
    state: crate::state::State,
    tenant: String,
    schema: SchemaRef,
    inner: Pin<Box<dyn Stream<Item = Result<RecordBatch, FlightError>> + Send>>,
    ready: std::collections::VecDeque<RecordBatch>,
    done: bool,
}

impl ChargedStream {
    /// Reads and charges the next chunk.
    async fn fill(&mut self) -> Result<(), FlightError> {
        let (mut rows, mut bytes) = (0, 0);
        let mut chunk = Vec::new();
        while rows < CHARGE_ROWS {
            match self.inner.next().await {
                Some(b) => {
                    // Serve exactly the advertised schema (names, types and nullability).
                    let b = RecordBatch::try_new(self.schema.clone(), b?.columns().to_vec())?;
                    rows += b.num_rows();
                    bytes += b.get_array_memory_size();
                    chunk.push(b);
                }
                None => {
                    self.done = true;
                    break;
                }
            }
        }
        if rows > 0 {
            self.state.charge_read(&self.tenant, rows, bytes).await?;
        }
        self.ready.extend(chunk);
        Ok(())
    }

    async fn next_batch(&mut self) -> Result<Option<RecordBatch>, FlightError> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Ok(Some(b));
            }
            if self.done {
                return Ok(None);
            }
            self.fill().await?;
        }
    }
}

fn ipc_schema(schema: &arrow::datatypes::Schema) -> Result<bytes::Bytes, Status> {
    let options = arrow::ipc::writer::IpcWriteOptions::default();
    let message: IpcMessage = SchemaAsIpc::new(schema, &options)
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(message.0)
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
        // The outer service (flight_service) authenticates handshakes.
        Err(Status::unimplemented(
            "handshake is served by the outer service",
        ))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.statement_info(&caller, &query.query, None, request.into_inner())
                .await?,
        ))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = caller(&request)?;
        Ok(Response::new(
            self.run_ticket(&caller, &ticket.statement_handle).await?,
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
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = caller(&request)?;
        let catalog = self.state.catalog(&caller.tenant).await?;
        let mut b = query.into_builder();
        for v in catalog.latest() {
            b.append(
                CATALOG_NAME,
                SCHEMA_NAME,
                &v.dataset,
                "TABLE",
                &described_schema(v, &v.dataset),
            )
            .map_err(FlightError::from)?;
        }
        for v in &catalog.versions {
            b.append(
                CATALOG_NAME,
                SCHEMA_NAME,
                v.pinned_name(),
                "TABLE",
                &described_schema(v, &v.pinned_name()),
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

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        metadata_info(&query, &primary_keys_schema(), request)
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = caller(&request)?;
        let catalog = self.state.catalog(&caller.tenant).await?;
        let known = query.catalog.as_deref().is_none_or(|c| c == CATALOG_NAME)
            && query.db_schema.as_deref().is_none_or(|s| s == SCHEMA_NAME);
        if !known || catalog.resolve_table(&query.table).is_none() {
            return Err(FlightError::UnknownDataset(query.table).into());
        }
        // Published versions are snapshots without declared keys: the answer is empty.
        let schema = primary_keys_schema();
        let batch = RecordBatch::new_empty(schema.clone());
        Ok(Response::new(one_batch(
            schema,
            Ok::<_, arrow::error::ArrowError>(batch),
        )))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = caller(&request)?;
        caller.require("read")?;
        let sql = qmark_to_dollar(&query.query);
        let ctx = self.state.session(&caller.tenant).await?;
        let df = query::plan(&ctx, &sql).await?;
        let types = df
            .logical_plan()
            .get_parameter_types()
            .map_err(FlightError::from)?;
        let dataset_schema = if types.is_empty() {
            query::plan_schema(&ctx, &sql, None).await?
        } else {
            Arc::new(df.schema().as_arrow().clone())
        };
        let mut params: Vec<(usize, DataType)> = types
            .into_iter()
            .map(|(name, t)| {
                let i = name.trim_start_matches('$').parse::<usize>().unwrap_or(0);
                (i, t.unwrap_or(DataType::Null))
            })
            .collect();
        params.sort_by_key(|(i, _)| *i);
        let parameter_schema = Schema::new(
            params
                .into_iter()
                .map(|(i, t)| Field::new(format!("${i}"), t, true))
                .collect::<Vec<_>>(),
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: self
                .state
                .signer
                .prepared(&caller.tenant, &sql, None)?
                .into(),
            dataset_schema: ipc_schema(&dataset_schema)?,
            parameter_schema: ipc_schema(&parameter_schema)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let caller = caller(&request)?;
        let claims = self.prepared(&caller, &query.prepared_statement_handle)?;
        let batches = parameter_batches(request).await?;
        let params = encode_params(&batches)?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(
                self.state
                    .signer
                    .prepared(&caller.tenant, &claims.sql, Some(params))?
                    .into(),
            ),
        })
    }

    /// ADBC's `executemany`: the prepared statement once per bound row. Every SQL surface here
    /// is read-only, so each run is a query: its parameters are checked and its errors reported,
    /// its rows discarded; the answer is 0 rows updated. The rows come with the call or were
    /// bound before (the handle carries them); none at all runs a statement without
    /// placeholders once and one with placeholders not at all (DB-API's rule).
    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = caller(&request)?;
        caller.require("read")?;
        let claims = self.prepared(&caller, &query.prepared_statement_handle)?;
        let batches = parameter_batches(request).await?;
        let ctx = self.state.session(&caller.tenant).await?;
        // rows sent now, else rows bound earlier (the handle carries them)
        let params = if batches.iter().map(RecordBatch::num_rows).sum::<usize>() > 0 {
            Some(encode_params(&batches)?)
        } else if claims.params.is_some() {
            claims.params
        } else if sql_has_params(&ctx, &claims.sql).await? {
            return Ok(0);
        } else {
            None
        };
        for df in query::dataframes(&ctx, &claims.sql, params.as_deref()).await? {
            let mut rows = df.execute_stream().await.map_err(FlightError::from)?;
            while let Some(b) = rows.next().await {
                b.map_err(FlightError::from)?;
            }
        }
        Ok(0)
    }

    /// Flight SQL bulk ingest (ADBC `adbc_ingest(..., mode="append")`): the rows land in the
    /// dataset's raw store under its contract (see `ingest`); the answer is the rows accepted.
    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        use arrow_flight::sql::TableExistsOption;
        let caller = caller(&request)?;
        caller.require("ingest")?;
        let dataset = cmd.table.clone();
        let refuse = |what: &str| {
            Err(Status::invalid_argument(format!(
                "ingest into dataset \"{dataset}\": {what}; BareCount appends to a contract's dataset \
                 (ADBC: adbc_ingest(dataset, data, mode=\"append\"))"
            )))
        };
        if cmd.temporary {
            return refuse("temporary tables are not supported");
        }
        if cmd.transaction_id.is_some() {
            return refuse("transactions are not supported");
        }
        if cmd
            .schema
            .as_deref()
            .is_some_and(|s| !s.is_empty() && s != SCHEMA_NAME)
            || cmd
                .catalog
                .as_deref()
                .is_some_and(|c| !c.is_empty() && c != CATALOG_NAME)
        {
            return refuse("a dataset is named without a catalog or schema");
        }
        if let Some(o) = cmd.table_definition_options {
            let exists =
                TableExistsOption::try_from(o.if_exists).unwrap_or(TableExistsOption::Fail);
            if !matches!(
                exists,
                TableExistsOption::Append | TableExistsOption::Unspecified
            ) {
                return refuse(&format!(
                    "if-exists option {} is not supported",
                    exists.as_str_name()
                ));
            }
        }
        let landed =
            crate::ingest::put(&self.state, &caller, &dataset, None, request.into_inner()).await?;
        Ok(landed.accepted)
    }

    /// Plain Flight `DoPut` with a path descriptor `[dataset]` or `[dataset, idempotency key]`
    /// (pyarrow's `do_put`): the rows land as one batch; the answer's `app_metadata` is JSON
    /// with the batch, accepted and quarantined counts and the ledger sequence.
    async fn do_put_fallback(
        &self,
        mut request: Request<PeekableFlightDataStream>,
        message: arrow_flight::sql::Any,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        let descriptor = match request.get_mut().peek().await {
            Some(Ok(first)) => first.flight_descriptor.clone(),
            Some(Err(e)) => return Err(e.clone()),
            None => None,
        };
        let Some(d) = descriptor.filter(|d| d.r#type == DescriptorType::Path as i32) else {
            return Err(Status::invalid_argument(format!(
                "DoPut takes a path descriptor [dataset] (ingest) or a Flight SQL command; got {}",
                if message.type_url.is_empty() {
                    "no command".to_owned()
                } else {
                    message.type_url
                }
            )));
        };
        let caller = caller(&request)?;
        let (dataset, key) = crate::ingest::parse_put_path(&d.path)?;
        let landed = crate::ingest::put(
            &self.state,
            &caller,
            &dataset,
            key.as_deref(),
            request.into_inner(),
        )
        .await?;
        let result = arrow_flight::PutResult {
            app_metadata: landed.metadata().into(),
        };
        Ok(Response::new(Box::pin(futures::stream::once(async move {
            Ok(result)
        }))))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = caller(&request)?;
        let claims = self.prepared(&caller, &cmd.prepared_statement_handle)?;
        Ok(Response::new(
            self.statement_info(&caller, &claims.sql, claims.params, request.into_inner())
                .await?,
        ))
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let caller = caller(&request)?;
        caller.require("read")?;
        let claims = self.prepared(&caller, &cmd.prepared_statement_handle)?;
        Ok(Response::new(
            self.run_sql(&caller, &claims.sql, claims.params.as_deref())
                .await?,
        ))
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        // Handles hold no server state; closing checks the handle and frees nothing.
        let caller = caller(&request)?;
        self.prepared(&caller, &query.prepared_statement_handle)?;
        Ok(())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The parameter rows a client streamed with DoPut.
async fn parameter_batches(
    request: Request<PeekableFlightDataStream>,
) -> Result<Vec<RecordBatch>, FlightError> {
    // a message with only the descriptor (what the Rust client sends to execute a statement it
    // bound before) carries no data: skip it rather than decode nothing
    FlightRecordBatchStream::new_from_flight_data(
        request
            .into_inner()
            .try_filter(|d| futures::future::ready(!d.data_header.is_empty()))
            .map_err(arrow_flight::error::FlightError::from),
    )
    .try_collect()
    .await
    .map_err(|e| FlightError::InvalidRequest(format!("cannot read the parameter batch: {e}")))
}

/// The result schema of GetPrimaryKeys, as the Flight SQL specification defines it.
fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// What a command descriptor for GetSchema asks about.
pub enum DescribedCommand {
    Statement(String),
    Prepared(Vec<u8>),
}

/// Decodes a command descriptor's statement query or prepared statement, if it is one.
pub fn descriptor_command(cmd: &[u8]) -> Option<DescribedCommand> {
    let any = arrow_flight::sql::Any::decode(cmd).ok()?;
    if let Ok(Some(q)) = any.unpack::<CommandStatementQuery>() {
        return Some(DescribedCommand::Statement(q.query));
    }
    if let Ok(Some(p)) = any.unpack::<CommandPreparedStatementQuery>() {
        return Some(DescribedCommand::Prepared(
            p.prepared_statement_handle.to_vec(),
        ));
    }
    None
}

/// Whether `sql` has placeholders still to bind.
pub async fn sql_has_params(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
) -> Result<bool, FlightError> {
    let df = crate::query::plan(ctx, sql).await?;
    Ok(!df.logical_plan().get_parameter_types()?.is_empty())
}
