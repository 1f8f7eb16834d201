//! Dex's gRPC admin API (`api.Dex`, the `api/v2` package of Dex v2.45) on its
//! own listener (`grpc.addr`): plaintext HTTP/2 without `grpc.tlsCert`, TLS with
//! it, and mutual TLS (a client certificate required and verified) with
//! `grpc.tlsClientCA`, as Dex. Each RPC translates its message and calls one
//! admin use case of the provider (`crate::provider::admin`), which applies
//! Dex's rules and writes the audit log; refusals are status UNKNOWN with
//! Dex's text, and "already exists" / "not found" are flags in OK answers, as
//! Dex does.
//!
//! The message and service code in `generated.rs` is generated from
//! `proto/dex/api/v2/api.proto` by `tools/grpc-codegen` and committed: building
//! oxidex then needs neither `protoc` nor prost-build and its dependencies (a
//! noticeable share of a cold build on a small CI machine), and the file only
//! changes when the proto does — which must stay wire-identical to Dex's.

mod tls;

#[allow(clippy::all, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod api {
    include!("generated.rs");
}

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};

use crate::config::settings::GrpcSettings;
use crate::http::AppState;
use crate::provider::admin::{AdminCaller, AdminError, Changed, ClientChanges, Created, Verified};
use crate::server::StoredSync;
use crate::storage::{ApiClient, ApiPassword};
use api::dex_server::{Dex, DexServer};

/// Largest request message accepted (grpc-go's default, which Dex keeps).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Requests served at once on one connection; more wait.
const CONCURRENCY_PER_CONNECTION: usize = 32;
/// Streams (calls) one client may have open on a connection.
const MAX_CONCURRENT_STREAMS: u32 = 64;
/// One call's time limit.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle connections are probed, and dropped when the peer stops answering.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("grpc: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Serves the API on `listener` until `shutdown`, then lets calls in flight
/// finish.
pub async fn serve(
    state: AppState,
    sync: Arc<StoredSync>,
    settings: GrpcSettings,
    listener: TcpListener,
    tls: Option<crate::tls::LiveAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GrpcError> {
    let mut builder = Server::builder()
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .timeout(CALL_TIMEOUT)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
    if settings
        .tls
        .as_ref()
        .is_none_or(|tls| tls.client_ca.is_none())
    {
        tracing::warn!(
            tls = tls.is_some(),
            "grpc: API server has no client certificate authentication: anyone who can reach it is an administrator"
        );
    }
    if settings.reflection {
        tracing::warn!("grpc.reflection: oxidex does not serve gRPC reflection; ignored");
    }
    let service = DexServer::new(AdminApi { state, sync })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let router = builder.add_service(service);
    match tls {
        Some(acceptor) => {
            let incoming = tokio_stream::wrappers::ReceiverStream::new(tls::accept(
                listener,
                acceptor,
                HANDSHAKE_TIMEOUT,
            ));
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?
        }
        None => {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?
        }
    }
    Ok(())
}

struct AdminApi {
    state: AppState,
    sync: Arc<StoredSync>,
}

impl AdminApi {
    fn provider(&self) -> Arc<crate::http::Live> {
        self.state.live()
    }

    /// After a change, this replica picks it up at once (others on their next
    /// poll of storage).
    async fn changed(&self) {
        self.sync.sync(&self.state).await;
    }
}

fn caller<T>(request: &Request<T>) -> AdminCaller {
    let certificate_subject = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .and_then(|certs| {
            let first = certs.first()?;
            let (_, parsed) = x509_parser::parse_x509_certificate(first.as_ref()).ok()?;
            Some(parsed.subject().to_string())
        });
    AdminCaller {
        certificate_subject,
    }
}

fn status(error: AdminError) -> Status {
    Status::unknown(error.0)
}

#[tonic::async_trait]
impl Dex for AdminApi {
    async fn get_client(
        &self,
        request: Request<api::GetClientReq>,
    ) -> Result<Response<api::GetClientResp>, Status> {
        let caller = caller(&request);
        let live = self.provider();
        let client = live
            .provider
            .api_get_client(&caller, &request.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(api::GetClientResp {
            client: Some(client_message(client)),
        }))
    }

    async fn create_client(
        &self,
        request: Request<api::CreateClientReq>,
    ) -> Result<Response<api::CreateClientResp>, Status> {
        let caller = caller(&request);
        let client = request.into_inner().client.map(|c| ApiClient {
            id: c.id,
            secret: c.secret,
            redirect_uris: c.redirect_uris,
            trusted_peers: c.trusted_peers,
            public: c.public,
            name: c.name,
            logo_url: c.logo_url,
        });
        let created = self
            .provider()
            .provider
            .api_create_client(&caller, client)
            .await
            .map_err(status)?;
        Ok(Response::new(match created {
            Created::Created(client) => {
                self.changed().await;
                api::CreateClientResp {
                    already_exists: false,
                    client: Some(client_message(client)),
                }
            }
            Created::AlreadyExists => api::CreateClientResp {
                already_exists: true,
                client: None,
            },
        }))
    }

    async fn update_client(
        &self,
        request: Request<api::UpdateClientReq>,
    ) -> Result<Response<api::UpdateClientResp>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        let changes = ClientChanges {
            redirect_uris: r.redirect_uris,
            trusted_peers: r.trusted_peers,
            name: r.name,
            logo_url: r.logo_url,
        };
        let changed = self
            .provider()
            .provider
            .api_update_client(&caller, &r.id, changes)
            .await
            .map_err(status)?;
        Ok(Response::new(api::UpdateClientResp {
            not_found: self.outcome(changed).await,
        }))
    }

    async fn delete_client(
        &self,
        request: Request<api::DeleteClientReq>,
    ) -> Result<Response<api::DeleteClientResp>, Status> {
        let caller = caller(&request);
        let changed = self
            .provider()
            .provider
            .api_delete_client(&caller, &request.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(api::DeleteClientResp {
            not_found: self.outcome(changed).await,
        }))
    }

    async fn list_clients(
        &self,
        request: Request<api::ListClientReq>,
    ) -> Result<Response<api::ListClientResp>, Status> {
        let caller = caller(&request);
        let clients = self
            .provider()
            .provider
            .api_list_clients(&caller)
            .await
            .map_err(status)?;
        Ok(Response::new(api::ListClientResp {
            clients: clients
                .into_iter()
                .map(|c| api::ClientInfo {
                    id: c.id,
                    redirect_uris: c.redirect_uris,
                    trusted_peers: c.trusted_peers,
                    public: c.public,
                    name: c.name,
                    logo_url: c.logo_url,
                })
                .collect(),
        }))
    }

    async fn create_password(
        &self,
        request: Request<api::CreatePasswordReq>,
    ) -> Result<Response<api::CreatePasswordResp>, Status> {
        let caller = caller(&request);
        let password = request.into_inner().password.map(|p| {
            (
                ApiPassword {
                    email: p.email,
                    hash: String::new(),
                    username: p.username,
                    user_id: p.user_id,
                },
                p.hash,
            )
        });
        let created = self
            .provider()
            .provider
            .api_create_password(&caller, password)
            .await
            .map_err(status)?;
        let already_exists = created == Created::AlreadyExists;
        if !already_exists {
            self.changed().await;
        }
        Ok(Response::new(api::CreatePasswordResp { already_exists }))
    }

    async fn update_password(
        &self,
        request: Request<api::UpdatePasswordReq>,
    ) -> Result<Response<api::UpdatePasswordResp>, Status> {
        let caller = caller(&request);
        let r = request.into_inner();
        let changed = self
            .provider()
            .provider
            .api_update_password(&caller, &r.email, r.new_hash, r.new_username)
            .await
            .map_err(status)?;
        Ok(Response::new(api::UpdatePasswordResp {
            not_found: self.outcome(changed).await,
        }))
    }

    async fn delete_password(
        &self,
        request: Request<api::DeletePasswordReq>,
    ) -> Result<Response<api::DeletePasswordResp>, Status> {
        let caller = caller(&request);
        let changed = self
            .provider()
            .provider
            .api_delete_password(&caller, &request.get_ref().email)
            .await
            .map_err(status)?;
        Ok(Response::new(api::DeletePasswordResp {
            not_found: self.outcome(changed).await,
        }))
    }

    async fn list_passwords(
        &self,
        request: Request<api::ListPasswordReq>,
    ) -> Result<Response<api::ListPasswordResp>, Status> {
        let caller = caller(&request);
        let passwords = self
            .provider()
            .provider
            .api_list_passwords(&caller)
            .await
            .map_err(status)?;
        Ok(Response::new(api::ListPasswordResp {
            passwords: passwords
                .into_iter()
                .map(|p| api::Password {
                    email: p.email,
                    hash: Vec::new(),
                    username: p.username,
                    user_id: p.user_id,
                })
                .collect(),
        }))
    }

    async fn create_connector(
        &self,
        _: Request<api::CreateConnectorReq>,
    ) -> Result<Response<api::CreateConnectorResp>, Status> {
        Err(connectors_off())
    }

    async fn update_connector(
        &self,
        _: Request<api::UpdateConnectorReq>,
    ) -> Result<Response<api::UpdateConnectorResp>, Status> {
        Err(connectors_off())
    }

    async fn delete_connector(
        &self,
        _: Request<api::DeleteConnectorReq>,
    ) -> Result<Response<api::DeleteConnectorResp>, Status> {
        Err(connectors_off())
    }

    async fn list_connectors(
        &self,
        _: Request<api::ListConnectorReq>,
    ) -> Result<Response<api::ListConnectorResp>, Status> {
        Err(connectors_off())
    }

    async fn get_version(
        &self,
        request: Request<api::VersionReq>,
    ) -> Result<Response<api::VersionResp>, Status> {
        let (server, api) = self.provider().provider.api_version(&caller(&request));
        Ok(Response::new(api::VersionResp { server, api }))
    }

    async fn get_discovery(
        &self,
        request: Request<api::DiscoveryReq>,
    ) -> Result<Response<api::DiscoveryResp>, Status> {
        let document = self
            .provider()
            .provider
            .api_discovery(&caller(&request))
            .map_err(status)?;
        let text = |key: &str| {
            document
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let list = |key: &str| -> Vec<String> {
            document
                .get(key)
                .and_then(|v| v.as_array())
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Response::new(api::DiscoveryResp {
            issuer: text("issuer"),
            authorization_endpoint: text("authorization_endpoint"),
            token_endpoint: text("token_endpoint"),
            jwks_uri: text("jwks_uri"),
            userinfo_endpoint: text("userinfo_endpoint"),
            device_authorization_endpoint: text("device_authorization_endpoint"),
            introspection_endpoint: text("introspection_endpoint"),
            grant_types_supported: list("grant_types_supported"),
            response_types_supported: list("response_types_supported"),
            subject_types_supported: list("subject_types_supported"),
            id_token_signing_alg_values_supported: list("id_token_signing_alg_values_supported"),
            code_challenge_methods_supported: list("code_challenge_methods_supported"),
            scopes_supported: list("scopes_supported"),
            token_endpoint_auth_methods_supported: list("token_endpoint_auth_methods_supported"),
            claims_supported: list("claims_supported"),
        }))
    }

    async fn list_refresh(
        &self,
        request: Request<api::ListRefreshReq>,
    ) -> Result<Response<api::ListRefreshResp>, Status> {
        let caller = caller(&request);
        let tokens = self
            .provider()
            .provider
            .api_list_refresh(&caller, &request.get_ref().user_id)
            .await
            .map_err(status)?;
        Ok(Response::new(api::ListRefreshResp {
            refresh_tokens: tokens
                .into_iter()
                .map(|t| api::RefreshTokenRef {
                    id: t.id,
                    client_id: t.client_id,
                    created_at: t.created_at,
                    last_used: t.last_used,
                })
                .collect(),
        }))
    }

    async fn revoke_refresh(
        &self,
        request: Request<api::RevokeRefreshReq>,
    ) -> Result<Response<api::RevokeRefreshResp>, Status> {
        let caller = caller(&request);
        let r = request.get_ref();
        let changed = self
            .provider()
            .provider
            .api_revoke_refresh(&caller, &r.user_id, &r.client_id)
            .await
            .map_err(status)?;
        Ok(Response::new(api::RevokeRefreshResp {
            not_found: changed == Changed::NotFound,
        }))
    }

    async fn verify_password(
        &self,
        request: Request<api::VerifyPasswordReq>,
    ) -> Result<Response<api::VerifyPasswordResp>, Status> {
        let caller = caller(&request);
        let r = request.get_ref();
        let verified = self
            .provider()
            .provider
            .api_verify_password(&caller, &r.email, &r.password)
            .await
            .map_err(status)?;
        Ok(Response::new(api::VerifyPasswordResp {
            verified: verified == Verified::Yes,
            not_found: verified == Verified::NotFound,
        }))
    }
}

impl AdminApi {
    /// `not_found` of an update or delete; a change is picked up at once.
    async fn outcome(&self, changed: Changed) -> bool {
        match changed {
            Changed::Done => {
                self.changed().await;
                false
            }
            Changed::NotFound => true,
        }
    }
}

fn client_message(client: ApiClient) -> api::Client {
    api::Client {
        id: client.id,
        secret: client.secret,
        redirect_uris: client.redirect_uris,
        trusted_peers: client.trusted_peers,
        public: client.public,
        name: client.name,
        logo_url: client.logo_url,
    }
}

/// Dex gates the connector RPCs behind `DEX_API_CONNECTORS_CRUD`; oxidex does
/// not offer them, so they answer as Dex with the flag off.
fn connectors_off() -> Status {
    Status::unknown("api_connectors_crud feature flag is not enabled")
}
