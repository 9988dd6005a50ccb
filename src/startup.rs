//! Building and running the application. `Application::build` binds its own listener, so
//! tests can ask for port 0 and learn the port; the route table lives here, in one place.

use std::{net::TcpListener, sync::Arc};

use actix_session::{
    SessionMiddleware,
    config::{CookieContentSecurity, PersistentSession, TtlExtensionPolicy},
};
use actix_web::{
    App, HttpResponse, HttpServer,
    cookie::{SameSite, time::Duration as CookieDuration},
    dev::Server,
    middleware::from_fn,
    web,
};
use anyhow::Context;
use tokio::sync::Notify;

use crate::{
    config::{MailTransportConfig, Settings},
    crypto::Keys,
    db,
    error::{ApiError, PageError, json_error},
    jobs::Worker,
    mail::{DevMailbox, Transport},
    services::{Hasher, Services},
    web::{
        self as handlers, AppState, BODY_LIMIT, csrf,
        key_rotation::reseal_session_cookie,
        middleware::{security_headers, session_failures},
        session_store::{DbSessionStore, session_cookie_name},
    },
};

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How long the mail worker may take to finish its sends under way at shutdown (an SMTP
/// command times out after 15 s).
const WORKER_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// The shared parts of a running instance, for the server, the worker and the CLI.
pub struct Parts {
    pub services: Services,
    pub transport: Transport,
    pub dev_mailbox: Option<DevMailbox>,
}

/// Connects to the database, migrates it and builds the services.
pub async fn build_parts(settings: Settings) -> anyhow::Result<Parts> {
    let settings = Arc::new(settings);
    let url = settings.database_url.clone();
    let pool_size = settings.db_pool_size;
    let pool = tokio::task::spawn_blocking(move || -> anyhow::Result<db::DbPool> {
        let pool = db::build_pool(&url, pool_size)
            .context("DATABASE_URL: cannot connect to the database")?;
        db::run_migrations(&pool).context("DATABASE_URL: migrations failed")?;
        Ok(pool)
    })
    .await??;
    let keys = Keys::derive(
        settings.secret_key.expose(),
        settings.secret_key_previous.as_ref().map(|k| k.expose()),
    );
    let (params, threads, queue) = (
        settings.hash_params,
        settings.hash_threads,
        settings.hash_queue,
    );
    // Building the hasher computes one argon2 hash: keep it off the async worker.
    let hasher = tokio::task::spawn_blocking(move || Hasher::new(params, threads, queue))
        .await?
        .map_err(|e| anyhow::anyhow!("ARGON2_*: {e}"))?;
    let (transport, dev_mailbox) = match &settings.mail {
        MailTransportConfig::Smtp(url) => (
            Transport::smtp(url.expose(), settings.smtp_connections)
                .map_err(anyhow::Error::msg)
                .context("SMTP_URL")?,
            None,
        ),
        MailTransportConfig::DevMailbox => {
            let mailbox = DevMailbox::default();
            (Transport::Dev(mailbox.clone()), Some(mailbox))
        }
    };
    let services = Services {
        pool,
        keys,
        hasher,
        settings,
        mail_wake: Arc::new(Notify::new()),
        requests_wake: Arc::new(Notify::new()),
    };
    Ok(Parts {
        services,
        transport,
        dev_mailbox,
    })
}

/// A built, not yet running, application.
pub struct Application {
    port: u16,
    server: Server,
    worker: Worker,
}

impl Application {
    /// Builds everything and binds the listener (`LISTEN_ADDR`, port 0 allowed).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.listen_addr)
            .with_context(|| format!("LISTEN_ADDR: cannot listen on {}", settings.listen_addr))?;
        let port = listener.local_addr()?.port();
        let Parts {
            services,
            transport,
            dev_mailbox,
        } = build_parts(settings).await?;
        let worker = Worker::new(services.clone(), transport).map_err(anyhow::Error::msg)?;
        let state = AppState {
            services,
            dev_mailbox,
        };
        let server = run_server(listener, state)?;
        Ok(Self {
            port,
            server,
            worker,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database pool (tests inspect rows through it).
    pub fn pool(&self) -> db::DbPool {
        self.worker.services().pool.clone()
    }

    /// A handle to stop the server.
    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until the server stops (Ctrl-C or SIGTERM), with the mail worker beside it.
    /// Once the server has stopped (its in-flight requests answered), the worker finishes
    /// the sends under way, hands back the mail it claimed but did not send, and stops.
    /// If the mail worker ever stops on its own (it only does by panicking), the server
    /// stops too: an instance that answers but sends no mail would lose every reset email
    /// silently.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (stop, stop_signal) = tokio::sync::watch::channel(false);
        let stop = std::sync::Arc::new(stop);
        let mut worker = tokio::spawn(tracing::Instrument::instrument(
            self.worker.run(stop_signal),
            tracing::info_span!("mail_worker"),
        ));
        // The worker stops starting sends as soon as the signal comes, while the server
        // still answers the requests in flight (actix-web listens for the same signals):
        // what is queued meanwhile stays queued for the next instance.
        let on_signal = std::sync::Arc::clone(&stop);
        let signals = tokio::spawn(async move {
            shutdown_signal().await;
            let _ = on_signal.send(true);
        });
        let handle = self.server.handle();
        let mut server = self.server;
        tokio::select! {
            result = &mut server => {
                signals.abort();
                let _ = stop.send(true);
                if tokio::time::timeout(WORKER_GRACE, &mut worker).await.is_err() {
                    tracing::warn!("the mail worker did not stop in time; its claims expire");
                    worker.abort();
                }
                result
            }
            stopped = &mut worker => {
                if *stop.borrow() {
                    // Stopped by the signal, as it should: the server is finishing too.
                    return server.await;
                }
                tracing::error!(outcome = ?stopped.err(), "the mail worker stopped; shutting down");
                handle.stop(true).await;
                Err(std::io::Error::other("the mail worker stopped"))
            }
        }
    }
}

fn run_server(listener: TcpListener, state: AppState) -> anyhow::Result<Server> {
    let settings = state.services.settings.clone();
    let https = settings.is_https();
    let session_ttl = CookieDuration::seconds(settings.session_ttl.as_secs() as i64);
    let store = DbSessionStore::new(state.services.pool.clone(), state.services.keys.clone());
    let cookie_key = state.services.keys.cookie_key();
    let pool_size = settings.db_pool_size as usize;
    let state = web::Data::new(state);
    let server = HttpServer::new(move || {
        let session = SessionMiddleware::builder(store.clone(), cookie_key.clone())
            .cookie_name(session_cookie_name(https).to_owned())
            .cookie_secure(https)
            .cookie_http_only(true)
            .cookie_same_site(SameSite::Lax)
            .cookie_content_security(CookieContentSecurity::Private)
            .session_lifecycle(
                PersistentSession::default()
                    .session_ttl(session_ttl)
                    .session_ttl_extension_policy(TtlExtensionPolicy::OnStateChanges),
            )
            .build();
        App::new()
            .app_data(state.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(BODY_LIMIT)
                    .error_handler(|err, _req| json_error(&err).into()),
            )
            .app_data(web::QueryConfig::default().error_handler(|_, _| {
                PageError::BadRequest("The address has an unreadable query.".into()).into()
            }))
            .app_data(web::PayloadConfig::default().limit(BODY_LIMIT))
            .wrap(from_fn(security_headers))
            // The API needs neither the session nor the CSRF cookie (it is not cookie-based).
            .service(
                web::scope("/auth")
                    .configure(api_routes)
                    .default_service(web::to(api_not_found)),
            )
            // Probes and files need no session: a cookie must not turn them into a lookup.
            .configure(plain_routes)
            .service(
                web::scope("")
                    .wrap(session)
                    .wrap(from_fn(session_failures))
                    .wrap(from_fn(csrf::ensure_cookie))
                    // Outermost, so it rewrites the Cookie header before anything reads it.
                    .wrap(from_fn(reseal_session_cookie))
                    .configure(page_routes)
                    .default_service(web::to(page_not_found)),
            )
    })
    .listen(listener)?
    // Blocking threads only run database work, which waits for one of the pool's
    // connections anyway: more threads per worker than connections add memory, not
    // throughput.
    .worker_max_blocking_threads(pool_size)
    .shutdown_timeout(10)
    .run();
    Ok(server)
}

/// The JSON API's routes (under `/auth`).
fn api_routes(cfg: &mut web::ServiceConfig) {
    use handlers::api;
    let resource =
        |path: &str| web::resource(path).default_service(web::to(api_method_not_allowed));
    cfg.service(resource("/forgot").post(api::forgot))
        .service(resource("/reset").post(api::reset));
}

/// The pages' routes.
fn page_routes(cfg: &mut web::ServiceConfig) {
    use handlers::{account, admin, auth, dev, recovery};
    let resource =
        |path: &str| web::resource(path).default_service(web::to(page_method_not_allowed));
    cfg.service(resource("/").get(auth::home))
        .service(
            resource("/signup")
                .get(auth::signup_form)
                .post(auth::signup),
        )
        .service(resource("/login").get(auth::login_form).post(auth::login))
        .service(resource("/logout").post(auth::logout))
        .service(resource("/account").get(account::account))
        .service(resource("/account/password").post(account::change_password))
        .service(resource("/account/sessions/end-others").post(account::end_other_sessions))
        .service(
            resource("/forgot")
                .get(recovery::forgot_form)
                .post(recovery::forgot),
        )
        .service(
            resource("/reset")
                .get(recovery::reset_form)
                .post(recovery::reset),
        )
        .service(resource("/dev/mail").get(dev::mailbox))
        .service(resource("/admin").get(admin::events::dashboard))
        .service(resource("/admin/users").get(admin::users::list))
        .service(resource("/admin/users/{id}").get(admin::users::detail))
        .service(resource("/admin/users/{id}/{action}").post(admin::users::act))
        .service(resource("/admin/events").get(admin::events::list))
        .service(resource("/admin/outbox").get(admin::outbox::list))
        .service(resource("/admin/outbox/{id}/retry").post(admin::outbox::retry));
}

/// Routes outside the session and CSRF middleware.
fn plain_routes(cfg: &mut web::ServiceConfig) {
    use handlers::health;
    let resource =
        |path: &str| web::resource(path).default_service(web::to(page_method_not_allowed));
    cfg.service(resource("/healthz").get(health::healthz))
        .service(resource("/readyz").get(health::readyz))
        .service(resource("/static/style.css").get(health::stylesheet))
        .service(resource("/openapi.json").get(health::openapi));
}

async fn api_not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found())
}

async fn api_method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::method_not_allowed())
}

async fn page_not_found() -> Result<HttpResponse, PageError> {
    Err(PageError::NotFound)
}

async fn page_method_not_allowed() -> Result<HttpResponse, PageError> {
    Err(PageError::MethodNotAllowed)
}
