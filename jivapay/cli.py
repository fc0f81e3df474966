"""The `jivapay` command line (Typer): run the stack, one server, the worker, beat, migrations, seeds.

`jivapay up` is the embedded default: whatever `DATABASE_URL`/`REDIS_URL`/`S3_ENDPOINT_URL` does not
name is started locally (see `jivapay.embedded`), then migrations and seeds run, and the six role
servers, a Celery worker and beat run as supervised children (`jivapay.supervisor`) through the same
commands production uses (`jivapay serve`, `jivapay worker`, `jivapay beat`). Every command that
writes owns its transaction (`atomic_transaction`).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from jivapay.enums import Role

app = typer.Typer(
    name="jivapay",
    help="JivaPay: P2P payment processing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations (Alembic).", no_args_is_help=True)
app.add_typer(db_app, name="db")

# Soft wrap: URLs and paths stay on one line (copyable) whatever the terminal width.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

SERVER_NAMES = ("merchant", "trader", "gateway", "admin", "support", "teamlead")
# Used until/unless `jivapay.servers.app_factory.DEFAULT_PORTS` says otherwise.
_FALLBACK_PORTS = {
    "merchant": 8001,
    "trader": 8002,
    "gateway": 8003,
    "admin": 8004,
    "support": 8005,
    "teamlead": 8006,
}
DEMO_CREDENTIALS_FILE = "demo-credentials.json"
BEAT_SCHEDULE_FILE = "celerybeat-schedule"
EMBEDDED_DATABASE = "jivapay"


def default_ports() -> dict[str, int]:
    """Each role server's default port (the app factory's map when it defines one)."""
    try:
        from jivapay.servers.app_factory import DEFAULT_PORTS
    except ImportError:
        return dict(_FALLBACK_PORTS)
    ports = {str(getattr(k, "value", k)): int(v) for k, v in dict(DEFAULT_PORTS).items()}
    return {name: ports.get(name, _FALLBACK_PORTS[name]) for name in SERVER_NAMES}


def _home(home: Path | None) -> Path:
    from jivapay.config import get_settings

    path = Path(home or get_settings().JIVAPAY_HOME).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _check_role(value: str) -> str:
    if value not in SERVER_NAMES:
        raise typer.BadParameter(f"must be one of: {', '.join(SERVER_NAMES)}")
    return value


def _reload_settings() -> None:
    """Make this process see environment changes (settings cache, engine)."""
    from jivapay.config import reset_settings_cache
    from jivapay.database.engine import dispose_engine

    reset_settings_cache()
    dispose_engine()


# --------------------------------------------------------------------------- servers and worker


@app.command()
def serve(
    role: str = typer.Option(..., "--role", callback=_check_role, help="|".join(SERVER_NAMES)),
    port: int | None = typer.Option(None, help="Default: the role's port (8001-8006)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0 in containers)."),
    workers: int = typer.Option(1, min=1, help="uvicorn worker processes."),
) -> None:
    """Run one role server with uvicorn."""
    import uvicorn

    from jivapay.config import get_settings

    settings = get_settings()
    if workers > 1:
        _prepare_multiprocess_metrics(role)
    if settings.METRICS_PORT is not None:
        from prometheus_client import start_http_server

        from jivapay.utils.metrics import metrics_registry

        start_http_server(
            settings.METRICS_PORT, addr=settings.METRICS_HOST, registry=metrics_registry()
        )
    uvicorn.run(
        f"jivapay.servers.{role}.server:app",
        host=host,
        port=port or default_ports()[role],
        workers=workers,
        server_header=False,
        # Idle keep-alive connections close after this; slow headers and bodies are the reverse
        # proxy's to cut (see README, Hardening).
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=64 * 1024,
        **proxy_options(settings.TRUSTED_PROXIES),
    )


def _prepare_multiprocess_metrics(role: str) -> None:
    """`--workers N`: every worker writes its metrics to one fresh directory, `/metrics` sums them."""
    import shutil
    import tempfile

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = os.path.join(tempfile.gettempdir(), f"jivapay-metrics-{role}-{os.getpid()}")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)


def proxy_options(trusted_proxies: str) -> dict[str, Any]:
    """uvicorn's forwarded-header options: believed only from the listed proxies, else never."""
    proxies = [p.strip() for p in trusted_proxies.split(",") if p.strip()]
    if not proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": proxies}


@app.command()
def worker(
    concurrency: int = typer.Option(2, min=1, help="Worker processes or threads."),
    pool: str = typer.Option("prefork", help="prefork | solo | threads"),
    queues: str | None = typer.Option(None, help="Comma-separated queues (default: celery)."),
    hostname: str | None = typer.Option(None, help="Node name (default celery@host)."),
) -> None:
    """Run a Celery worker."""
    from jivapay.config import get_settings
    from jivapay.worker.app import celery_app

    if pool not in ("prefork", "solo", "threads"):
        raise _fail("--pool must be prefork, solo or threads", 2)
    argv = ["worker", "--loglevel", get_settings().LOG_LEVEL, "--pool", pool]
    argv += ["--concurrency", str(concurrency)]
    if queues:
        argv += ["--queues", queues]
    if hostname:
        argv += ["--hostname", hostname]
    celery_app.worker_main(argv)


@app.command()
def beat(home: Path | None = typer.Option(None, help="Where the schedule file lives.")) -> None:
    """Run Celery beat (exactly one per deployment); its schedule file lives under JIVAPAY_HOME."""
    from jivapay.config import get_settings
    from jivapay.worker.app import celery_app

    schedule = _home(home) / BEAT_SCHEDULE_FILE
    celery_app.start(["beat", "--loglevel", get_settings().LOG_LEVEL, "--schedule", str(schedule)])


def ping_worker(timeout: float, queue: str | None = None) -> tuple[dict[str, Any], float]:
    """Send `system.ping` and wait for the answer: (answer, round trip in ms).

    Raises `celery.exceptions.TimeoutError` when no worker answers in time.
    """
    from jivapay.worker.tasks import ping

    started = time.perf_counter()
    result = ping.apply_async(queue=queue) if queue else ping.apply_async()
    try:
        answer: dict[str, Any] = result.get(timeout=timeout)
    finally:
        result.forget()
    return answer, (time.perf_counter() - started) * 1000


@app.command("worker-ping")
def worker_ping(
    timeout: float = typer.Option(10.0, help="Seconds to wait for the answer."),
    queue: str | None = typer.Option(None, help="Queue to send to (default: celery)."),
) -> None:
    """Send `system.ping` to the workers and wait for the pong."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    try:
        answer, elapsed = ping_worker(timeout, queue)
    except CeleryTimeout:
        raise _fail(f"no worker answered within {timeout:g}s") from None
    except Exception as exc:
        raise _fail(f"ping failed: {exc}") from exc
    console.print(
        f"[green]pong[/] from {answer.get('hostname')} in {elapsed:.0f} ms (at {answer.get('at')})"
    )


# --------------------------------------------------------------------------- database and data


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: head)."""
    from jivapay.database import migrate

    migrate.upgrade(revision)
    console.print(f"[green]database upgraded to[/] {_current_label()}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(..., help="Target, e.g. -1 or base.")) -> None:
    """Revert migrations down to REVISION."""
    from jivapay.database import migrate

    migrate.downgrade(revision)
    console.print(f"[yellow]database downgraded to[/] {_current_label()}")


@db_app.command("current")
def db_current() -> None:
    """Show the database's revision and whether it is at head."""
    console.print(f"current revision: {_current_label()}")


def current_revisions() -> tuple[set[str], set[str]]:
    """(revisions applied to the database, head revisions of the code)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from jivapay.database.engine import get_engine
    from jivapay.database.migrate import alembic_config

    with get_engine().connect() as conn:
        current = set(MigrationContext.configure(conn).get_current_heads())
    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    return current, heads


def _current_label() -> str:
    current, heads = current_revisions()
    if not current:
        return "base (empty database)" + ("" if not heads else f"; head is {', '.join(heads)}")
    label = ", ".join(sorted(current))
    return f"{label} (head)" if current == heads else f"{label} (head is {', '.join(heads)})"


def _run_seed(demo: bool, output: Path | None) -> Any:
    from jivapay.database.utils import atomic_transaction
    from jivapay.seeds import run_seed, write_credentials

    with atomic_transaction() as session:
        report = run_seed(session, demo=demo)
    if output is not None:
        write_credentials(report, output)
    return report


def _print_admin(report: Any) -> None:
    if report.admin_password:
        console.print(
            Panel(
                f"email:    {report.admin_email}\npassword: {report.admin_password}\n\n"
                "Shown once: store it now.",
                title="super admin created",
                border_style="yellow",
            )
        )
    else:
        # Either JIVAPAY_ADMIN_PASSWORD set it, or it was generated and shown on an earlier run.
        console.print(
            f"super admin: {report.admin_email} "
            "(password from JIVAPAY_ADMIN_PASSWORD, or the one shown when it was generated)"
        )


@app.command()
def seed(
    demo: bool = typer.Option(False, "--demo", help="Also build the demo world."),
    output: Path | None = typer.Option(
        None, help=f"Demo credentials file (default: JIVAPAY_HOME/{DEMO_CREDENTIALS_FILE})."
    ),
) -> None:
    """Insert settings defaults, roles, the super admin, reference data (and the demo world)."""
    from jivapay.utils.exceptions import JivaPayException

    if demo and output is None:
        output = _home(None) / DEMO_CREDENTIALS_FILE
    try:
        report = _run_seed(demo, output)
    except JivaPayException as exc:
        raise _fail(exc.message) from exc
    created = ", ".join(f"{k}={v}" for k, v in report.created.items() if v) or "nothing new"
    console.print(f"[green]seeded[/]: {created}")
    _print_admin(report)
    if demo and output is not None:
        console.print(f"demo world: {report.demo_status}; credentials in {output}")


@app.command()
def reconcile() -> None:
    """Check every money invariant; print each discrepancy and exit 1 if there is any."""
    from jivapay.database.utils import get_db_session
    from jivapay.services.reconciliation import reconcile as check

    with get_db_session() as session:
        found = check(session)
    if not found:
        console.print("[green]reconciliation clean[/]: balances, history and open holds agree")
        return
    for item in found:
        console.print(f"[red]discrepancy[/] {item}")
    raise _fail(f"{len(found)} discrepancies found")


@app.command("verify-callback")
def verify_callback(
    secret: str = typer.Option(..., help="The store's callback secret (whsec_...)."),
    msg_id: str = typer.Option(..., "--id", help="The webhook-id header."),
    timestamp: str = typer.Option(..., help="The webhook-timestamp header."),
    signature: str = typer.Option(..., help="The webhook-signature header."),
    body_file: Path | None = typer.Option(None, help="The raw body; read from stdin if omitted."),
    tolerance: int = typer.Option(300, help="Allowed clock skew in seconds; 0 skips the check."),
) -> None:
    """Check a merchant callback's Standard Webhooks signature: print valid (exit 0) or invalid (1)."""
    from jivapay.services.webhook_signing import WebhookVerificationError, verify

    body = body_file.read_bytes() if body_file is not None else sys.stdin.buffer.read()
    try:
        verify(
            secret,
            msg_id=msg_id,
            timestamp=timestamp,
            signature=signature,
            body=body,
            tolerance_seconds=tolerance or None,
        )
    except WebhookVerificationError as exc:
        console.print(f"[red]invalid[/]: {exc}")
        raise typer.Exit(1) from exc
    console.print("[green]valid[/]")


@app.command("create-user")
def create_user(
    email: str = typer.Option(..., help="Login email."),
    role: Role = typer.Option(..., help="admin | support | teamlead | merchant | trader"),
    password: str | None = typer.Option(None, help="Prompted (hidden) when omitted."),
    template: str | None = typer.Option(None, help="Permission template for staff roles."),
    first_name: str | None = typer.Option(None),
    last_name: str | None = typer.Option(None),
) -> None:
    """Create a user of any role (staff get the permissions of --template)."""
    from jivapay.database.utils import atomic_transaction
    from jivapay.services.auth_service import create_user as create_user_service
    from jivapay.utils.exceptions import JivaPayException

    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        with atomic_transaction() as session:
            user = create_user_service(
                session,
                email=email,
                password=password,
                role=role,
                first_name=first_name,
                last_name=last_name,
                template=template,
            )
            user_id = user.id
    except JivaPayException as exc:
        raise _fail(exc.message) from exc
    console.print(f"[green]created[/] {role.value} {email} (id {user_id})")


# --------------------------------------------------------------------------- the embedded stack


def _prepare_services(home: Path, started: list[str]) -> dict[str, str]:
    """Start what the environment does not configure; returns the variables the children need.

    `started` receives every embedded server of `home`, also one reused from a previous run that
    crashed: `up` owns its home (one `up` per home), so all of them stop when it stops.
    """
    from jivapay import embedded

    env: dict[str, str] = {"JIVAPAY_HOME": str(home)}
    if not os.environ.get("DATABASE_URL"):
        server = embedded.postgres_server(home)
        started.append(embedded.POSTGRES)
        env["DATABASE_URL"] = embedded.ensure_database(server.url, EMBEDDED_DATABASE)
        console.print(f"embedded PostgreSQL: {env['DATABASE_URL']} (data {home / 'pg'})")
    if not os.environ.get("REDIS_URL"):
        server = embedded.redis_server(home)
        started.append(embedded.REDIS)
        env["REDIS_URL"] = server.url
        console.print(f"embedded Redis: {server.url} (data {home / 'redis'})")
    if not os.environ.get("S3_ENDPOINT_URL"):
        server = embedded.s3_server(home)
        started.append(embedded.S3)
        env["S3_ENDPOINT_URL"] = server.url
        env["S3_ACCESS_KEY"] = embedded.S3_TEST_ACCESS_KEY
        env["S3_SECRET_KEY"] = embedded.S3_TEST_SECRET_KEY
        console.print(f"embedded S3 (moto, in memory): {server.url}")
    os.environ.update(env)
    _reload_settings()
    if "S3_ENDPOINT_URL" in env:
        from jivapay.config import get_settings

        settings = get_settings()
        embedded.ensure_bucket(
            env["S3_ENDPOINT_URL"], settings.S3_BUCKET_NAME, region=settings.S3_REGION
        )
    return env


def _stack_specs(home: Path, host: str, ports: dict[str, int], with_worker: bool) -> list[Any]:
    from jivapay.supervisor import ChildSpec

    cli = [sys.executable, "-m", "jivapay.cli"]
    specs = [
        ChildSpec(
            name=name,
            argv=[*cli, "serve", "--role", name, "--host", host, "--port", str(port)],
            health_url=f"http://{_client_host(host)}:{port}/health",
        )
        for name, port in ports.items()
    ]
    if with_worker:
        specs.append(ChildSpec("worker", [*cli, "worker", "--concurrency", "2"]))
        specs.append(ChildSpec("beat", [*cli, "beat", "--home", str(home)]))
    return specs


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104


def _print_stack(home: Path, host: str, ports: dict[str, int], report: Any, creds: Path) -> None:
    table = Table(title="JivaPay is up", title_justify="left")
    table.add_column("server")
    table.add_column("API docs")
    for name, port in ports.items():
        table.add_row(name, f"http://{_client_host(host)}:{port}/docs")
    console.print(table)
    if report is not None:
        _print_admin(report)
        if creds.exists():
            console.print(f"demo credentials: {creds}")
    _print_rate_limiter()
    console.print(f"logs: {home / 'logs'}   stop: Ctrl-C")


def _print_rate_limiter() -> None:
    """The limiter fails open, so a failing storage would go unnoticed: say it loudly."""
    from jivapay.middleware.rate_limiting import RequestRateLimiter

    limiter = RequestRateLimiter()
    try:
        limiter.probe()
    except Exception as exc:
        err_console.print(
            Panel(
                f"rate limiter storage FAILING ({type(exc).__name__}: {exc}).\n"
                "Requests are served WITHOUT rate limits until it works; /ready answers 503.",
                title="WARNING",
                style="bold red",
            )
        )
    else:
        console.print("[green]rate limiter[/]: working (Redis)")
    finally:
        limiter.close()


def _check_worker(log_path: Path, timeout: float = 60.0) -> None:
    """Ping the new worker once; a silent worker is reported, the stack keeps running."""
    try:
        _, elapsed = ping_worker(timeout)
    except Exception as exc:
        err_console.print(f"[yellow]worker did not answer a ping ({exc}); see {log_path}[/]")
    else:
        console.print(f"[green]ready[/] worker (ping {elapsed:.0f} ms)")


@app.command()
def up(
    home: Path | None = typer.Option(None, help="Data, logs and pid files (default .jivapay)."),
    no_worker: bool = typer.Option(False, "--no-worker", help="No Celery worker and beat."),
    no_demo: bool = typer.Option(False, "--no-demo", help="Seed without the demo world."),
    port_offset: int = typer.Option(0, help="Add to every server port (8001-8006)."),
    host: str = typer.Option("127.0.0.1", help="Interface the servers bind."),
    startup_timeout: float = typer.Option(90.0, help="Seconds to wait for every server."),
) -> None:
    """Run the whole stack locally (embedded services for what is not configured)."""
    from jivapay import embedded
    from jivapay.supervisor import (
        ChildDied,
        ShutdownRequested,
        StartupTimeout,
        Supervisor,
        shutdown_signals,
        signals_ignored,
        tail,
    )

    home_dir = _home(home)
    up_pid = home_dir / "run" / "up.pid"
    previous = embedded.read_int_file(up_pid)
    if previous and previous != os.getpid() and embedded.process_alive(previous, "jivapay"):
        raise _fail(f"`jivapay up` already runs on {home_dir} (pid {previous})")
    ports = {name: port + port_offset for name, port in default_ports().items()}
    busy = [f"{n}:{p}" for n, p in ports.items() if not embedded.port_is_free(p, host)]
    if busy:
        raise _fail(f"ports in use ({', '.join(busy)}): another stack? try --port-offset")

    up_pid.parent.mkdir(parents=True, exist_ok=True)
    up_pid.write_text(f"{os.getpid()}\n")
    started: list[str] = []
    supervisor = Supervisor(home_dir, console=err_console)
    exit_code = 0
    try:
        with shutdown_signals():
            os.environ.setdefault(
                "PUBLIC_BASE_URL", f"http://{_client_host(host)}:{ports['gateway']}"
            )
            _prepare_services(home_dir, started)
            from jivapay.database import migrate

            migrate.upgrade("head")
            console.print(f"migrations: {_current_label()}")
            creds = home_dir / DEMO_CREDENTIALS_FILE
            report = _run_seed(demo=not no_demo, output=None if no_demo else creds)
            _reload_settings()  # the children own their connections; drop this process's pool
            supervisor.base_env = dict(os.environ)
            for spec in _stack_specs(home_dir, host, ports, with_worker=not no_worker):
                supervisor.start(spec)
            supervisor.wait_healthy(
                startup_timeout, on_ready=lambda c: console.print(f"[green]ready[/] {c.spec.name}")
            )
            if not no_worker:
                _check_worker(supervisor.logs_dir / "worker.log")
            _print_stack(home_dir, host, ports, report, creds)
            supervisor.run()
    except ShutdownRequested as exc:
        err_console.print(f"{exc.args[0]}: stopping")
    except ChildDied as exc:
        err_console.print(f"[bold red]{exc}[/]\n{tail(exc.log_path)}")
        exit_code = 1
    except StartupTimeout as exc:
        err_console.print(f"[bold red]{exc}[/] (logs in {supervisor.logs_dir})")
        exit_code = 1
    except Exception:
        err_console.print_exception()
        err_console.print("[bold red]start-up failed[/]: stopping what was started")
        exit_code = 1
    finally:
        with signals_ignored():
            supervisor.stop()
            for name in started:
                embedded.stop_server(home_dir, name)
            up_pid.unlink(missing_ok=True)
    err_console.print("stopped")
    raise typer.Exit(exit_code)


@app.command()
def down(home: Path | None = typer.Option(None, help="The home `jivapay up` used.")) -> None:
    """Stop a running `jivapay up` of HOME and any embedded server it left behind."""
    from jivapay import embedded

    home_dir = _home(home)
    up_pid = embedded.read_int_file(home_dir / "run" / "up.pid")
    if up_pid and embedded.process_alive(up_pid, "jivapay"):
        embedded.terminate_pid(up_pid, timeout=30.0)
        console.print(f"stopped `jivapay up` (pid {up_pid})")
    stopped = embedded.stop_all(home_dir)
    console.print(f"embedded servers stopped: {', '.join(stopped) or 'none running'}")


if __name__ == "__main__":
    app()
