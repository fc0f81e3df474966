"""The `jivapay` command line (Typer): run the stack, one server, the worker, beat, migrations, seeds.

`jivapay up` is the embedded default: whatever `DATABASE_URL`/`REDIS_URL`/`S3_ENDPOINT_URL` does not
name is started locally (see `jivapay.embedded`), then migrations and seeds run, and the six role
servers, a Celery worker, beat and the intake feed run as supervised children (`jivapay.supervisor`)
through the same commands production uses (`jivapay serve`, `jivapay worker`, `jivapay beat`,
`jivapay intake-feed`). Every command that
writes owns its transaction (`atomic_transaction`).

While `up` runs it publishes its services in `JIVAPAY_HOME/run/stack.json`; every other command run
without `DATABASE_URL`/`REDIS_URL` attaches to that stack (the checkout's `.jivapay/` by default), and
says in one line what to do when there is none. Expected failures (nothing to connect to, a refused
input) print one `error:` line and exit 1, never a traceback.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from jivapay.enums import Role

app = typer.Typer(
    name="jivapay",
    help="JivaPay: P2P payment processing.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: flags without `<bool>`-style type labels
)
db_app = typer.Typer(
    help="Database migrations (Alembic).", no_args_is_help=True, rich_markup_mode=None
)
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
INBOX_PORT = 8007  # the demo webhook inbox of a local stack (plus --port-offset)
STACK_FILE = "stack.json"  # under JIVAPAY_HOME/run while `jivapay up` runs
# What `up` publishes for other commands of the same checkout.
STACK_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "S3_ENDPOINT_URL",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "PUBLIC_BASE_URL",
    "CALLBACK_ALLOW_PRIVATE_NETWORKS",
    "JIVAPAY_HOME",
)
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


def checkout_root() -> Path | None:
    """The source checkout this package runs from (an editable install), else None."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def default_home() -> Path:
    """`JIVAPAY_HOME`; a relative one (default `.jivapay`) is taken in this checkout, else here."""
    from jivapay.config import get_settings

    path = Path(get_settings().JIVAPAY_HOME).expanduser()
    if not path.is_absolute():
        path = (checkout_root() or Path.cwd()) / path
    return path.resolve()


def _home(home: Path | None) -> Path:
    path = Path(home).expanduser().resolve() if home else default_home()
    path.mkdir(parents=True, exist_ok=True)
    return path


def stack_file(home: Path) -> Path:
    return home / "run" / STACK_FILE


def _write_stack_file(home: Path, env: dict[str, str], servers: dict[str, str]) -> Path:
    """Publish the running stack's services for the other commands (owner-only: it holds URLs)."""
    path = stack_file(home)
    payload = {
        "pid": os.getpid(),
        "env": {k: os.environ[k] for k in STACK_VARIABLES if os.environ.get(k)} | env,
        "servers": servers,
    }
    _write_private_json(path, payload)
    return path


def _write_private_json(path: Path, payload: dict[str, Any]) -> None:
    import json
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def running_stack(home: Path) -> dict[str, Any] | None:
    """The stack file of `home` when the `jivapay up` that wrote it still runs, else None."""
    import json

    from jivapay import embedded

    try:
        stack = json.loads(stack_file(home).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(stack, dict) or not embedded.process_alive(stack.get("pid"), "jivapay"):
        return None
    return stack


def _attach_stack(*needed: str) -> None:
    """Fill the unset service variables from the running `jivapay up` of this checkout.

    Fails in one line when a variable of `needed` is neither set nor published by a running stack.
    """
    missing = [name for name in needed if not os.environ.get(name)]
    if not missing and os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"):
        return  # configured explicitly: nothing to find
    home = default_home()
    stack = running_stack(home)
    if stack is None:
        if missing:
            raise _fail(
                f"{' and '.join(missing)} not set, and no `jivapay up` is running in {home}: "
                "start it (scripts/up) or export the URL"
            )
        return
    for name, value in dict(stack.get("env", {})).items():
        if not os.environ.get(name) and isinstance(value, str):
            os.environ[name] = value
    _reload_settings()


def _fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
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


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else None


@app.command()
def serve(
    role: str = typer.Option(..., "--role", callback=_check_role, help="|".join(SERVER_NAMES)),
    port: int | None = typer.Option(None, help="Default: the role's port (8001-8006)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind (0.0.0.0 in containers)."),
    workers: int = typer.Option(1, min=1, help="uvicorn worker processes."),
    metrics_port: int | None = typer.Option(
        None, help="Serve /metrics on this port instead of the API port (default: METRICS_PORT)."
    ),
) -> None:
    """Run one role server with uvicorn."""
    import uvicorn

    metrics_port = metrics_port or _env_int("METRICS_PORT")
    if metrics_port is not None:
        os.environ["METRICS_PORT"] = str(metrics_port)  # the app then answers 404 on its own port
    if metrics_port is not None or workers > 1:
        # Several processes (uvicorn workers, or this one and the metrics port) share one set of
        # metric files; set up before any metric exists, so the workers inherit the directory.
        import tempfile

        from jivapay.utils.metrics_setup import enable_multiprocess

        default_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(
            prefix=f"jivapay-metrics-{role}-"
        )
        enable_multiprocess(Path(default_dir))
    _attach_stack()
    from jivapay.config import get_settings
    from jivapay.servers.serving import uvicorn_options

    settings = get_settings()
    if metrics_port is not None:
        from prometheus_client import start_http_server

        from jivapay.utils.metrics import collecting_registry

        start_http_server(metrics_port, addr=settings.METRICS_HOST, registry=collecting_registry())
    uvicorn.run(
        f"jivapay.servers.{role}.server:app",
        host=host,
        port=port or default_ports()[role],
        workers=workers,
        **uvicorn_options(settings.TRUSTED_PROXIES),
    )


@app.command()
def worker(
    concurrency: int = typer.Option(2, min=1, help="Worker processes or threads."),
    pool: str = typer.Option("prefork", help="prefork | solo | threads"),
    queues: str | None = typer.Option(None, help="Comma-separated queues (default: celery)."),
    hostname: str | None = typer.Option(None, help="Node name (default celery@host)."),
    metrics_port: int | None = typer.Option(
        None, help="Serve Prometheus /metrics on this port (all pool processes summed)."
    ),
    # Loopback unless told otherwise, as `serve`'s METRICS_HOST: the worker's gauges hold the money
    # in flight and the platform's balance (containers pass --metrics-addr 0.0.0.0 on their network).
    metrics_addr: str = typer.Option("127.0.0.1", help="Interface for --metrics-port."),
    metrics_dir: Path | None = typer.Option(
        None, help="Multiprocess metric files (default: PROMETHEUS_MULTIPROC_DIR or a temp dir)."
    ),
) -> None:
    """Run a Celery worker."""
    if metrics_port is not None:
        # Before the Celery app (and any metric) is imported: pool children inherit the directory.
        import tempfile

        from jivapay.utils.metrics_setup import enable_multiprocess

        default_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(
            prefix="jivapay-metrics-"
        )
        enable_multiprocess(metrics_dir or Path(default_dir))
    _attach_stack()
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
    if metrics_port is not None:
        from jivapay.worker.metrics import start_metrics_server

        start_metrics_server(metrics_port, metrics_addr)
    celery_app.worker_main(argv)


@app.command("intake-feed")
def intake_feed(
    poll: float = typer.Option(1.0, min=0.1, help="Seconds between checks of a quiet connection."),
) -> None:
    """Hand committed intake orders to the workers (LISTEN, then Celery messages); run one."""
    import signal
    import threading

    _attach_stack()
    from jivapay.intake_dispatch import dispatcher
    from jivapay.utils.logging import configure_logging
    from jivapay.utils.notifications import init_sentry
    from jivapay.worker.intake_feed import run

    configure_logging("intake-feed")
    init_sentry("intake-feed")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    run(stop, dispatcher, poll_seconds=poll)
    dispatcher.flush(5.0)  # what was heard before the signal still goes out


@app.command()
def beat(home: Path | None = typer.Option(None, help="Where the schedule file lives.")) -> None:
    """Run Celery beat (exactly one per deployment); its schedule file lives under JIVAPAY_HOME."""
    _attach_stack()
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
    _attach_stack(*(() if os.environ.get("CELERY_BROKER_URL") else ("REDIS_URL",)))
    from celery.exceptions import TimeoutError as CeleryTimeout

    try:
        answer, elapsed = ping_worker(timeout, queue)
    except CeleryTimeout:
        raise _fail(f"no worker answered within {timeout:g}s") from None
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise _fail(f"ping failed: {reason}") from exc
    console.print(
        f"[green]pong[/] from {answer.get('hostname')} in {elapsed:.0f} ms (at {answer.get('at')})"
    )


@app.command("webhook-inbox")
def webhook_inbox(
    port: int = typer.Option(INBOX_PORT, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    home: Path | None = typer.Option(None, help="Where received callbacks are kept."),
) -> None:
    """Run the demo webhook inbox: receives merchant callbacks, lists them with their signatures."""
    import uvicorn

    from jivapay.servers.webhook_inbox import build_inbox_app

    _attach_stack("DATABASE_URL")
    uvicorn.run(build_inbox_app(_home(home)), host=host, port=port, log_level="warning")


# --------------------------------------------------------------------------- database and data


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: head)."""
    _attach_stack("DATABASE_URL")
    from jivapay.database import migrate

    migrate.upgrade(revision)
    console.print(f"[green]database upgraded to[/] {_current_label()}")


@db_app.command("downgrade")
def db_downgrade(
    revision: str = typer.Argument(..., help="Target, e.g. -1 or base."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask; required when not at a terminal."),
) -> None:
    """Revert migrations down to REVISION: drops what they added, data included (asks first)."""
    _attach_stack("DATABASE_URL")
    from jivapay.database import migrate
    from jivapay.database.engine import get_engine

    if not yes:
        # A downgrade drops tables and columns with the money in them: never on a mistyped
        # command or a script that meant `upgrade`.
        if not _interactive():
            raise _fail("db downgrade drops data: pass --yes to run it without a terminal")
        target = get_engine().url.render_as_string(hide_password=True)
        typer.confirm(
            f"Revert {target} from {_current_label()} to {revision}, dropping its data?",
            abort=True,
        )
    migrate.downgrade(revision)
    console.print(f"[yellow]database downgraded to[/] {_current_label()}")


@db_app.command("current")
def db_current() -> None:
    """Show the database's revision and whether it is at head."""
    _attach_stack("DATABASE_URL")
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
    _attach_stack("DATABASE_URL")
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


@app.command("storage-init")
def storage_init() -> None:
    """Create the receipts bucket (`S3_BUCKET_NAME`) unless it exists: a deployment runs it once,
    with the migrations (`jivapay up` makes its embedded one itself)."""
    _attach_stack("S3_ENDPOINT_URL")
    from jivapay.utils import s3_client
    from jivapay.utils.exceptions import JivaPayException

    try:
        s3_client.ensure_bucket()
    except JivaPayException as exc:
        raise _fail(exc.message) from exc
    console.print(f"[green]bucket ready[/]: {s3_client.bucket_name()}")


@app.command()
def reconcile() -> None:
    """Check every money invariant; print each discrepancy and exit 1 if there is any."""
    _attach_stack("DATABASE_URL")
    from jivapay.database.utils import read_session
    from jivapay.services.reconciliation import reconcile as check

    with read_session() as session:
        found = check(session)
    if not found:
        console.print(
            "[green]reconciliation clean[/]: balances, history, orders, holds and the statistics"
            " rollup agree"
        )
        return
    for item in found:
        console.print(f"[red]discrepancy[/] {item}")
    raise _fail(f"{len(found)} discrepancies found")


@app.command("rotate-encryption-key")
def rotate_encryption_key(
    batch_size: int = typer.Option(500, min=1, max=10_000, help="Rows per transaction."),
) -> None:
    """Re-encrypt every stored secret with the newest DATA_ENCRYPTION_KEY (the first of the list).

    Idempotent: values already on the newest key are left alone, so it can be re-run after an
    interruption. Exits 1 if a row was busy (run it again) or no configured key reads a value.
    """
    _attach_stack("DATABASE_URL")
    from jivapay.database.utils import atomic_transaction
    from jivapay.services.key_rotation import ColumnRotation, encrypted_columns, rotate_batch
    from jivapay.utils.exceptions import JivaPayException

    reports = []
    try:
        for column in encrypted_columns():
            report = ColumnRotation(name=f"{column.table.name}.{column.name}")
            after: int | None = 0
            while after is not None:
                # One transaction per batch: row locks last one batch, progress survives a crash.
                with atomic_transaction() as session:
                    after = rotate_batch(session, column, report, after=after, limit=batch_size)
            reports.append(report)
            console.print(
                f"{report.name}: {report.rotated} re-encrypted, {report.already_current} already "
                f"on the newest key, {report.busy} busy, {report.unreadable} unreadable"
            )
    except JivaPayException as exc:
        raise _fail(exc.message) from exc
    rotated = sum(r.rotated for r in reports)
    busy = sum(r.busy for r in reports)
    unreadable = sum(r.unreadable for r in reports)
    console.print(f"total: {rotated} re-encrypted")
    if unreadable:
        raise _fail(f"{unreadable} values no configured key decrypts: keep the key that wrote them")
    if busy:
        raise _fail(f"{busy} rows were locked by a request: run the command again")


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


@app.command()
def sign(
    method: str = typer.Option(..., help="HTTP method, e.g. GET or POST."),
    path: str = typer.Option(
        ..., help="Path as sent, with its ?query if any: /gateway/payin/status/ord_123"
    ),
    public_key: str = typer.Option(
        ..., envvar="JIVAPAY_PUBLIC_KEY", help="The store's public key."
    ),
    private_key: str = typer.Option(
        ..., envvar="JIVAPAY_PRIVATE_KEY", help="The store's private key (better from the env)."
    ),
    body: str | None = typer.Option(None, help="The raw body (none for a GET)."),
    body_file: Path | None = typer.Option(None, help="Read the raw body from a file; - is stdin."),
    curl: bool = typer.Option(False, "--curl", help="Print as curl -H arguments."),
) -> None:
    """Print the X-API-Key, X-Timestamp and X-Signature headers of one gateway request."""
    from jivapay.security import compute_signature

    if body is not None and body_file is not None:
        raise _fail("give --body or --body-file, not both", 2)
    raw = b""
    if body is not None:
        raw = body.encode()
    elif body_file is not None:
        raw = sys.stdin.buffer.read() if str(body_file) == "-" else body_file.read_bytes()
    if not path.startswith("/"):
        raise _fail("--path is the URL path, starting with /", 2)
    timestamp = str(int(time.time()))
    headers = {
        "X-API-Key": public_key,
        "X-Timestamp": timestamp,
        "X-Signature": compute_signature(private_key, timestamp, method, path, raw),
    }
    if curl:
        print(" ".join(f"-H {name}:{value}" for name, value in headers.items()))
    else:
        for name, value in headers.items():
            print(f"{name}: {value}")


def _interactive() -> bool:
    """Whether a person is at the keyboard (stdin is a terminal), not a pipe or a script."""
    return sys.stdin.isatty()


def _read_password(prompt: str) -> str:
    """A password typed twice, hidden, at a terminal, or one line of stdin when piped. Never a
    command-line argument: that is visible to every user of the machine and kept in shell history."""
    if _interactive():
        return str(typer.prompt(prompt, hide_input=True, confirmation_prompt=True))
    return sys.stdin.readline().rstrip("\r\n")


@app.command("create-user")
def create_user(
    email: str = typer.Option(..., help="Login email."),
    role: Role = typer.Option(..., help="admin | support | teamlead | merchant | trader"),
    template: str | None = typer.Option(None, help="Permission template for staff roles."),
    first_name: str | None = typer.Option(None),
    last_name: str | None = typer.Option(None),
) -> None:
    """Create a user of any role (staff get the permissions of --template); the password is
    prompted twice, hidden, or read as one line from stdin when piped."""
    _attach_stack("DATABASE_URL")
    from jivapay.database.utils import atomic_transaction
    from jivapay.services.auth_service import create_user as create_user_service
    from jivapay.utils.exceptions import JivaPayException

    password = _read_password("Password")
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


@app.command("set-password")
def set_password(
    email: str = typer.Option(..., help="The user's login email."),
) -> None:
    """Set a user's password (prompted twice, hidden; or one line read from stdin when piped)."""
    from jivapay.database.utils import atomic_transaction
    from jivapay.services.account_recovery import reset_password
    from jivapay.utils.exceptions import JivaPayException

    _attach_stack("DATABASE_URL")
    password = _read_password("New password")
    try:
        with atomic_transaction() as session:
            user = reset_password(session, email=email, new_password=password)
            label = f"{user.role} {user.email} (id {user.id})"
    except JivaPayException as exc:
        raise _fail(exc.message) from exc
    console.print(f"[green]password set[/] for {label}")


# --------------------------------------------------------------------------- the embedded stack


def _prepare_services(home: Path, started: list[str]) -> dict[str, str]:
    """Start what the environment does not configure; returns the variables the children need.

    `started` receives every embedded server of `home`, also one reused from a previous run that
    crashed: `up` owns its home (one `up` per home), so all of them stop when it stops.
    """
    from jivapay import embedded

    env: dict[str, str] = {"JIVAPAY_HOME": str(home)}
    if not os.environ.get("DATABASE_URL"):
        console.print("starting the embedded PostgreSQL (the first run creates its data) ...")
        server = embedded.postgres_server(home)
        started.append(embedded.POSTGRES)
        env["DATABASE_URL"] = embedded.ensure_database(server.url, EMBEDDED_DATABASE)
        console.print(f"embedded PostgreSQL: {env['DATABASE_URL']} (data {home / 'pg'})")
    if not os.environ.get("REDIS_URL"):
        console.print("starting the embedded Redis ...")
        server = embedded.redis_server(home)
        started.append(embedded.REDIS)
        env["REDIS_URL"] = server.url
        console.print(f"embedded Redis: {server.url} (data {home / 'redis'})")
    if not os.environ.get("S3_ENDPOINT_URL"):
        console.print("starting the embedded S3 (moto; replaying its stored objects) ...")
        server = embedded.s3_server(home)
        started.append(embedded.S3)
        env["S3_ENDPOINT_URL"] = server.url
        env["S3_ACCESS_KEY"] = embedded.S3_TEST_ACCESS_KEY
        env["S3_SECRET_KEY"] = embedded.S3_TEST_SECRET_KEY
        console.print(f"embedded S3 (moto): {server.url} (objects kept in {home / 's3'})")
    os.environ.update(env)
    _reload_settings()
    if "S3_ENDPOINT_URL" in env:
        from jivapay.config import get_settings

        settings = get_settings()
        embedded.ensure_bucket(
            env["S3_ENDPOINT_URL"], settings.S3_BUCKET_NAME, region=settings.S3_REGION
        )
    return env


def _stack_specs(
    home: Path, host: str, ports: dict[str, int], with_worker: bool, inbox_port: int | None = None
) -> list[Any]:
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
    if inbox_port is not None:
        specs.append(
            ChildSpec(
                name="webhook-inbox",
                argv=[*cli, "webhook-inbox", "--host", host, "--port", str(inbox_port)],
                env={"JIVAPAY_HOME": str(home)},
                health_url=f"http://{_client_host(host)}:{inbox_port}/health",
            )
        )
    if with_worker:
        specs.append(ChildSpec("worker", [*cli, "worker", "--concurrency", "2"]))
        specs.append(ChildSpec("beat", [*cli, "beat", "--home", str(home)]))
        specs.append(ChildSpec("intake-feed", [*cli, "intake-feed"]))
    return specs


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104


def server_urls(host: str, ports: dict[str, int]) -> dict[str, str]:
    return {name: f"http://{_client_host(host)}:{port}" for name, port in ports.items()}


def record_stack_credentials(path: Path, *, report: Any, servers: dict[str, str]) -> None:
    """Add the admin login and this run's server URLs to the credentials file (mode 0600).

    The demo part is written by the seed; a generated admin password is kept from the run that
    generated it (it cannot be read back from its hash).
    """
    import json

    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    found = payload.get("admin")
    admin: dict[str, Any] = dict(found) if isinstance(found, dict) else {}
    if admin.get("email") != report.admin_email:
        admin = {"email": report.admin_email}
    if report.admin_password:
        admin["password"] = report.admin_password
        admin.pop("note", None)
    elif not admin.get("password"):
        admin["password"] = None
        admin["note"] = (
            "set by JIVAPAY_ADMIN_PASSWORD or shown when it was generated; "
            f"reset it with `jivapay set-password --email {report.admin_email}`"
        )
    payload["admin"] = admin
    payload["servers"] = servers
    payload["gateway_url"] = servers["gateway"] + "/gateway"
    _write_private_json(path, payload)


def _point_demo_stores(callback_url: str) -> None:
    from jivapay.database.utils import atomic_transaction
    from jivapay.seeds.demo import point_demo_stores_at

    with atomic_transaction() as session:
        point_demo_stores_at(session, callback_url)
    console.print(f"demo stores send their callbacks to {callback_url}")


def _print_stack(
    home: Path,
    host: str,
    ports: dict[str, int],
    report: Any,
    creds: Path,
    inbox_port: int | None = None,
) -> None:
    table = Table(title="JivaPay is up", title_justify="left")
    table.add_column("server")
    table.add_column("API docs")
    for name, port in ports.items():
        table.add_row(name, f"http://{_client_host(host)}:{port}/docs")
    if inbox_port is not None:
        table.add_row(
            "webhook inbox", f"http://{_client_host(host)}:{inbox_port}/ (demo callbacks)"
        )
    console.print(table)
    if report is not None:
        _print_admin(report)
        if creds.exists():
            console.print(f"credentials (admin, demo logins and store keys): {creds}")
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
    no_worker: bool = typer.Option(False, "--no-worker", help="No worker, beat or intake feed."),
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
    if not os.environ.get("DATABASE_URL"):
        # A local stack: merchant callbacks may go to local addresses (the demo inbox).
        os.environ.setdefault("CALLBACK_ALLOW_PRIVATE_NETWORKS", "true")
    allows_local = os.environ.get("CALLBACK_ALLOW_PRIVATE_NETWORKS", "").lower() in ("1", "true")
    inbox_port = INBOX_PORT + port_offset if allows_local and not no_demo else None
    wanted = {**ports, "webhook-inbox": inbox_port} if inbox_port else ports
    busy = [f"{n}:{p}" for n, p in wanted.items() if not embedded.port_is_free(p, host)]
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
            console.print(f"starting JivaPay in {home_dir}")
            env = _prepare_services(home_dir, started)
            from jivapay.database import migrate

            console.print("applying migrations ...")
            migrate.upgrade("head")
            console.print(f"migrations: {_current_label()}")
            creds = home_dir / DEMO_CREDENTIALS_FILE
            console.print("seeding ...")
            report = _run_seed(demo=not no_demo, output=None if no_demo else creds)
            servers = server_urls(host, ports)
            if inbox_port is not None:
                _point_demo_stores(f"http://{_client_host(host)}:{inbox_port}/callbacks")
            record_stack_credentials(creds, report=report, servers=servers)
            _write_stack_file(home_dir, env, servers)
            _reload_settings()  # the children own their connections; drop this process's pool
            supervisor.base_env = dict(os.environ)
            specs = _stack_specs(home_dir, host, ports, not no_worker, inbox_port)
            for spec in specs:
                supervisor.start(spec)
            supervisor.wait_healthy(
                startup_timeout, on_ready=lambda c: console.print(f"[green]ready[/] {c.spec.name}")
            )
            if not no_worker:
                _check_worker(supervisor.logs_dir / "worker.log")
            _print_stack(home_dir, host, ports, report, creds, inbox_port)
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
            stack_file(home_dir).unlink(missing_ok=True)
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
    stack_file(home_dir).unlink(missing_ok=True)
    console.print(f"embedded servers stopped: {', '.join(stopped) or 'none running'}")


def main() -> None:
    """The `jivapay` entry point: expected failures end in one `error:` line, exit 1."""
    from jivapay.embedded import EmbeddedServerError
    from jivapay.utils.exceptions import JivaPayException

    try:
        app()
    except JivaPayException as exc:
        raise SystemExit(_fail(exc.message).exit_code) from None
    except EmbeddedServerError as exc:
        raise SystemExit(_fail(str(exc)).exit_code) from None
    except Exception as exc:
        reason = _unreachable(exc)
        if reason is None:
            raise
        raise SystemExit(_fail(reason).exit_code) from None


def _unreachable(exc: BaseException) -> str | None:
    """One line for a service that cannot be reached, or None for any other error."""
    import redis
    import sqlalchemy.exc
    from kombu.exceptions import OperationalError as KombuOperationalError

    if isinstance(exc, sqlalchemy.exc.OperationalError):
        first = str(exc.orig or exc).strip().splitlines()[0]
        return f"cannot reach the database: {first}"
    if isinstance(exc, redis.exceptions.ConnectionError | KombuOperationalError):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"cannot reach Redis: {first}"
    return None


if __name__ == "__main__":
    main()
