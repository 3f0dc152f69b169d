"""The ``hotline`` command: run the services, migrate the database, place a simulated call, manage tokens,
departments, the dispatch catalogue and the pool of virtual numbers."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import functools
import sys
import time
from pathlib import Path

import click

from config import ConfigError, Settings, load_settings
from hotline.redis_conn import embedded_redis
from hotline.startup import describe_storage_error, is_storage_error
from hotline.supervisor import EXIT_CONFIG, CommandChild, ForkedChild, Supervisor


class StartupError(click.ClickException):
    """A fault in the settings, the menu or the surroundings that a restart cannot heal.

    Its exit code tells a supervisor (hotline.supervisor) to stop instead of restarting in a loop.
    """

    exit_code = EXIT_CONFIG


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


@contextlib.contextmanager
def _services(settings: Settings):
    """The process's Services for the length of a command, closed at its end."""
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from hotline.services import build_services

    services = build_services(settings)
    try:
        yield services
    finally:
        services.close()


class _HotlineGroup(click.Group):
    """Storage that cannot be reached is one line for the operator, whichever command met it, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            settings = (ctx.obj or {}).get("settings")
            raise click.ClickException(describe_storage_error(
                exc, database_url=getattr(settings, "database_url", None),
                redis_url=getattr(settings, "redis_url", None))) from None


@click.group(cls=_HotlineGroup)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML settings file (also HOTLINE_CONFIG).")
@click.pass_context
def main(ctx: click.Context, config_file: str | None) -> None:
    """12345 citizen-service hotline backend."""
    try:
        settings = load_settings(config_file)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    ctx.obj = {"settings": settings, "config_file": config_file}
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from hotline.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)


# --- the services ------------------------------------------------------------------------------


@main.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run every service in one process tree: FastAGI server, web API and worker (embedded default)."""
    settings = _settings(ctx)
    _check_menu(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with _stop_on_sigterm(), embedded_redis(settings) as settings:
        _migrate_or_warn(settings)
        env = dict(os.environ, HOTLINE_REDIS_URL=settings.redis_url,
                   HOTLINE_DATA_DIR=str(settings.data_dir.resolve()))
        if ctx.obj["config_file"]:
            env["HOTLINE_CONFIG"] = str(Path(ctx.obj["config_file"]).resolve())
        exe = [sys.executable, "-m", "hotline.cli"]
        names = ("agi", "web", "worker") + (("ami",) if settings.ami_secret else ())
        children = [CommandChild(name, exe + [name], env) for name in names]
        ami = (f"AMI link to {settings.ami_host}:{settings.ami_port}" if settings.ami_secret
               else "no AMI link (set ami_secret for agents, live queue figures and call-backs)")
        click.echo(f"hotline: FastAGI on {settings.agi_host}:{settings.agi_port}, web API on "
                   f"http://{settings.web_host}:{settings.web_port}/, worker on queue '{settings.rq_queue}', "
                   f"{ami}. Data in {settings.data_dir.resolve()}. Ctrl-C stops.", err=True)
        code = Supervisor(children).run()
    if code:
        raise SystemExit(code)


@contextlib.contextmanager
def _stop_on_sigterm():
    """Until a supervisor takes the signals over, SIGTERM unwinds like Ctrl-C (so the embedded Redis and
    the children started so far are stopped by the ``finally`` blocks instead of being orphaned)."""
    def _interrupt(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        if signal.getsignal(signal.SIGTERM) is _interrupt:  # a supervisor that stopped ignores the rest: keep that
            signal.signal(signal.SIGTERM, previous)


def _check_menu(settings: Settings) -> None:
    """A menu that does not load stops the start with its one-line error (instead of crash-looping children)."""
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from ivr.errors import MenuError
    from ivr.menu import load_menu

    try:
        load_menu(settings.menu)
    except MenuError as exc:
        raise StartupError(f"menu {settings.menu!r}: {exc}") from None


@main.command()
@click.option("--processes", type=int, default=None, help="Server processes sharing the port "
                                                            "(default: agi_processes; 0 = one per core).")
@click.pass_context
def agi(ctx: click.Context, processes: int | None) -> None:
    """Run the FastAGI server alone (production: one process per core, as many hosts as needed)."""
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from agi_scripts.server import ListenError, bind_listener

    settings = _settings(ctx)
    _check_menu(settings)
    count = settings.agi_processes if processes is None else processes
    if count < 0:
        raise StartupError("--processes must be 0 (one per core) or more")
    count = count or os.cpu_count() or 1
    try:
        # One listening socket, bound here and inherited by every process: a second server on the same
        # port is refused by the kernel instead of silently taking a share of the calls.
        listener = bind_listener(settings.agi_host, settings.agi_port, settings.agi_max_sessions)
    except ListenError as exc:  # the port in use, an address not on this host, a privileged port
        raise StartupError(str(exc)) from None
    with _stop_on_sigterm(), embedded_redis(settings) as settings:  # one Redis for all, started before they fork
        if count == 1:
            _run_agi_process(settings, listener)
            return
        children = [ForkedChild(f"FastAGI process {i}", functools.partial(
            _run_agi_process, dataclasses.replace(
                settings, agi_metrics_port=settings.agi_metrics_port + i if settings.agi_metrics_port else 0),
            listener)) for i in range(count)]
        code = Supervisor(children).run()
    listener.close()
    if code:
        raise SystemExit(code)


def _run_agi_process(settings: Settings, listener) -> None:
    """One FastAGI server process: serve until SIGTERM/SIGINT, let calls finish, spool unsaved tickets."""
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from hotline.agi import build_server

    with _services(settings) as services:
        server = build_server(services, listener=listener)
        services.start_replaying()  # this host's spool has an owner: deferred saves resume within seconds

        def _stop(*_):  # only a flag: a signal handler must not take locks (see hotline.supervisor)
            server.request_stop()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        _serve_metrics(settings)
        try:
            server.serve_forever()
        finally:
            server.shutdown(grace=15)  # then _services closes the writer: what it still holds is spooled


def _serve_metrics(settings: Settings) -> None:
    """The FastAGI server's Prometheus metrics on agi_metrics_port (0: off)."""
    port = settings.agi_metrics_port
    if port:
        # lazy: a command loads only what it runs, so `hotline call` and --help start fast
        from base.metrics import serve as serve_metrics

        try:
            serve_metrics(port, settings.agi_host)
        except OSError as exc:  # calls matter more than metrics: serve them anyway
            logging.getLogger("hotline.agi").error(
                "metrics not served: port %d unavailable (%s)", port, exc.strerror or exc,
                extra={"event": "agi.metrics_unavailable"})


@main.command()
@click.pass_context
def web(ctx: click.Context) -> None:
    """Run the web API alone (waitress)."""
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    import waitress
    from web.app import create_app, shutdown

    with _stop_on_sigterm(), embedded_redis(_settings(ctx)) as settings, _services(settings) as services:
        app = create_app(services)
        try:
            # waitress's own body limit sits above ours, so an oversized body gets the API's JSON 413.
            server = waitress.create_server(app, host=settings.web_host, port=settings.web_port,
                                            threads=settings.web_threads + settings.web_live_streams, ident="hotline",
                                            max_request_body_size=2 * settings.web_max_body_bytes)
        except OSError as exc:
            raise StartupError(f"the web API cannot listen on {settings.web_host}:{settings.web_port}: "
                               f"{exc.strerror or exc}") from None
        server.print_listen("hotline web API on http://{}:{}/")
        try:
            server.run()
        finally:
            shutdown(app)  # ends the live streams and their Redis listener


@main.command("ami")
@click.pass_context
def ami_command(ctx: click.Context) -> None:
    """Run the queue watch: Asterisk's AMI events into live queue figures, agents' states and call-backs."""
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from hotline.ami import run_queue_watch

    settings = _settings(ctx)
    if not settings.ami_secret:
        raise click.ClickException("no AMI link configured: set ami_secret (and ami_host, ami_port, "
                                   "ami_username) to the [hotline] user of asterisk/manager.conf")
    stop = []

    def _stop(*_):  # only a flag: a signal handler must not take locks (see hotline.supervisor)
        stop.append(True)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with embedded_redis(settings) as settings, _services(settings) as services:
        run_queue_watch(services, lambda: bool(stop))


@main.command()
@click.option("--burst", is_flag=True, help="Run the jobs waiting now, then stop.")
@click.pass_context
def worker(ctx: click.Context, burst: bool) -> None:
    """Run the background worker (deferred ticket writes and other jobs)."""
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from hotline.worker import run_worker

    with embedded_redis(_settings(ctx)) as settings:
        run_worker(settings, burst=burst)


# --- the database ------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


class DatabaseUnreachable(click.ClickException):
    """The database did not answer; the message is one line without credentials."""


def _upgrade(settings: Settings, revision: str = "head") -> None:
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from hotline.migrate import upgrade

    try:
        upgrade(settings.database_url, revision)
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        raise DatabaseUnreachable(describe_storage_error(exc, database_url=settings.database_url)) from None


def _migrate_or_warn(settings: Settings) -> None:
    """Migrate at start; an unreachable database is one line, and the services start anyway: calls are
    routed and their tickets spooled until it answers (run `hotline db upgrade` once it does)."""
    try:
        _upgrade(settings)
    except DatabaseUnreachable as exc:
        logging.getLogger("hotline").error("%s; starting anyway (tickets are kept in the spool until it answers)",
                                           exc.message, extra={"event": "startup.database_unreachable"})


@db.command("upgrade")
@click.argument("revision", default="head")
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Bring the database schema up to REVISION (default: the newest)."""
    _upgrade(_settings(ctx), revision)
    click.echo(f"database is at {revision}")


# --- a simulated call --------------------------------------------------------------------------


@main.command()
@click.option("--from", "caller", default="13800138000", show_default=True,
              help="The caller's number as the carrier presents it ('unknown' for withheld).")
@click.option("--to", "dialled", default="12345", show_default=True, help="The number dialled.")
@click.option("--press", default="", help="Keys for each menu, comma-separated: '1,2' or '2,4,2026112800001#'; "
                                          "an empty entry presses nothing.")
@click.option("--hangup-at", type=int, default=None, help="Hang up while the N-th AGI command is pending.")
@click.option("--script", default="incoming", show_default=True, help="The agi://host/NAME to call.")
@click.option("--host", default=None, help="FastAGI server host (default: agi_host).")
@click.option("--port", type=int, default=None, help="FastAGI server port (default: agi_port).")
@click.option("--quiet", is_flag=True, help="Print only the result, not the dialogue.")
@click.pass_context
def call(ctx, caller, dialled, press, hangup_at, script, host, port, quiet) -> None:
    """Place a simulated call to the FastAGI server exactly as Asterisk would, and show the ticket."""
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from agi_scripts.simulator import Caller, place_call

    settings = _settings(ctx)
    keys = press.split(",") if press else []
    try:
        result = place_call(Caller(number=caller, dialled=dialled, keys=keys, hangup_at=hangup_at, script=script),
                            host or settings.agi_host, port or settings.agi_port)
    except OSError as exc:
        raise click.ClickException(f"cannot reach the FastAGI server at {host or settings.agi_host}:"
                                   f"{port or settings.agi_port} ({exc.strerror or exc}); is `hotline serve` "
                                   f"running?") from None
    if not quiet:
        for line in result.transcript:
            click.echo(line)
        click.echo("")
    for name in ("HOTLINE_TICKET", "HOTLINE_QUEUE", "HOTLINE_PRIORITY", "HOTLINE_LANG"):
        click.echo(f"{name}={result.variables.get(name, '')}")
    if result.ticket:
        _show_ticket(settings, result.ticket)


def _show_ticket(settings: Settings, number: str) -> None:
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    import json

    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from web.tickets import ticket_json
    from orders.errors import StorageUnavailable

    try:
        with _services(settings) as services:
            # The server saves the ticket's final state just after handing the call back: give it a moment.
            for _ in range(30):
                view = services.tickets.get(number)
                if view is not None and view.status != "in_ivr":
                    break
                time.sleep(0.1)
    except StorageUnavailable:
        click.echo(f"ticket {number}: the database is unreachable; the ticket waits in the spool and is written once it answers")
        return
    if view is None:
        click.echo(f"ticket {number}: not in the database yet (it waits in the spool until the database answers)")
        return
    click.echo(json.dumps(ticket_json(view, for_department=False), ensure_ascii=False, indent=2))


# --- prompts and tokens ------------------------------------------------------------------------


@main.command()
@click.option("--force", is_flag=True, help="Re-render every file, recorded ones included.")
@click.option("--sounds-dir", type=click.Path(file_okay=False), default=None,
              help="Asterisk's sounds folder (default: sounds_dir, i.e. <data_dir>/sounds).")
@click.pass_context
def prompts(ctx: click.Context, force: bool, sounds_dir: str | None) -> None:
    """Render the menu's prompt texts into 8 kHz WAV files under sounds_dir/<lang>/hotline/."""
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from ivr.errors import MenuError, PromptError
    from ivr.menu import load_menu
    from ivr.prompts import render_prompts

    settings = _settings(ctx)
    try:
        target = Path(sounds_dir) if sounds_dir else settings.sounds_dir
        written = render_prompts(load_menu(settings.menu), target, force=force)
    except (MenuError, PromptError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{len(written)} prompt files written under {target} (files already up to date are kept)")


@main.group()
def token() -> None:
    """API tokens (each carries one role)."""


@token.command("create")
@click.option("--name", required=True, help="Who or what uses the token.")
@click.option("--role", required=True, type=click.Choice(["admin", "supervisor", "agent", "department"]))
@click.option("--department", default=None, help="For department tokens: which department.")
@click.option("--agent", default=None, help="For agent tokens: the agent's code (its phone and queues).")
@click.pass_context
def token_create(ctx, name, role, department, agent) -> None:
    """Create a token and print it once (only its hash is stored)."""
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from web.auth import TokenError, create_token
    from web.tokens import Role

    try:
        with _services(_settings(ctx)) as services:
            if role == "department" and department:
                _check_department(services, department.strip())
            click.echo(create_token(services.session_factory, name, Role(role), department, agent))
    except TokenError as exc:
        raise click.ClickException(str(exc)) from None


def _check_department(services, code: str) -> None:
    """Once departments are kept in the database, a department token must name one of them."""
    known = [d.code for d in services.departments.list(include_inactive=True)]
    if known and code not in known:
        raise click.ClickException(f"no department {code!r}; add it first (hotline departments add) "
                                   f"or use one of: {', '.join(known)}")


@token.command("list")
@click.pass_context
def token_list(ctx) -> None:
    """List tokens (names and roles, never the tokens)."""
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from web.auth import list_tokens

    with _services(_settings(ctx)) as services:
        for t in list_tokens(services.session_factory):
            click.echo("\t".join((t.name, t.role.value, t.department or "-", "active" if t.active else "revoked")))


@token.command("revoke")
@click.argument("name_or_token")
@click.pass_context
def token_revoke(ctx, name_or_token) -> None:
    """Revoke a token by its name or the token itself."""
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from web.auth import TokenError, revoke_token

    try:
        with _services(_settings(ctx)) as services:
            revoke_token(services.session_factory, name_or_token)
    except TokenError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("revoked")



# --- departments and the dispatch catalogue ----------------------------------------------------


@contextlib.contextmanager
def _departments(ctx: click.Context):
    """The DepartmentStore for one command; its refusals are one line for the operator."""
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from orders.departments import DepartmentError, DepartmentNotFound

    try:
        with _services(_settings(ctx)) as services:
            yield services.departments
    except (DepartmentError, DepartmentNotFound) as exc:
        raise click.ClickException(str(exc)) from None


def _department_line(department) -> str:
    return "\t".join((department.code, department.name_zh, department.name_en, department.parent_code or "-",
                      "active" if department.active else "inactive", ",".join(department.phones) or "-"))


@main.group()
def departments() -> None:
    """Departments tickets are dispatched to, and their call-back phones."""


@departments.command("add")
@click.argument("code")
@click.option("--zh", "name_zh", required=True, help="The name in Mandarin.")
@click.option("--en", "name_en", required=True, help="The name in English.")
@click.option("--parent", "parent_code", default=None, help="The code of the department it belongs to.")
@click.pass_context
def departments_add(ctx, code, name_zh, name_en, parent_code) -> None:
    """Add department CODE (lowercase letters, digits, '-' and '_')."""
    with _departments(ctx) as store:
        click.echo(_department_line(store.create(code, name_zh, name_en, parent_code)))


@departments.command("list")
@click.option("--all", "include_inactive", is_flag=True, help="Retired departments too.")
@click.pass_context
def departments_list(ctx, include_inactive) -> None:
    """List departments: code, names, parent, state, phones (tab-separated)."""
    with _departments(ctx) as store:
        for department in store.list(include_inactive=include_inactive):
            click.echo(_department_line(department))


@departments.group("phone")
def departments_phone() -> None:
    """The numbers a department may call citizens back from."""


@departments_phone.command("add")
@click.argument("code")
@click.argument("number")
@click.option("--label", default="", help="What the number is, e.g. 'duty desk'.")
@click.pass_context
def departments_phone_add(ctx, code, number, label) -> None:
    """Let NUMBER call citizens back for department CODE."""
    with _departments(ctx) as store:
        click.echo(_department_line(store.add_phone(code, number, label)))


@departments_phone.command("remove")
@click.argument("code")
@click.argument("number")
@click.pass_context
def departments_phone_remove(ctx, code, number) -> None:
    """Stop NUMBER calling citizens back for department CODE."""
    with _departments(ctx) as store:
        click.echo(_department_line(store.remove_phone(code, number)))


# --- the pool of virtual numbers ---------------------------------------------------------------


@contextlib.contextmanager
def _pool(ctx: click.Context):
    """The virtual-number broker for one pool command; its refusals are one line for the operator."""
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from virtual_numbers.broker import Broker
    from virtual_numbers.errors import BrokerError

    try:
        with _services(_settings(ctx)) as services:
            # The pool lives in the database alone: no Redis (nor the embedded one) is started for it.
            yield Broker(services.session_factory, None, region=services.settings.region)
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None


def _number_line(view) -> str:
    return "\t".join((view.number, view.state, f"{view.live_bindings} live binding(s)"))


@main.group()
def numbers() -> None:
    """The pool of virtual numbers through which departments reach confidential citizens."""


@numbers.command("add")
@click.argument("number")
@click.pass_context
def numbers_add(ctx, number) -> None:
    """Add NUMBER to the pool (or put a reserved or removed one back in service)."""
    with _pool(ctx) as broker:
        click.echo(_number_line(broker.add_number(number)))


@numbers.command("reserve")
@click.argument("number")
@click.pass_context
def numbers_reserve(ctx, number) -> None:
    """Drain NUMBER: no new binding on it; its live bindings go on until they end."""
    with _pool(ctx) as broker:
        click.echo(_number_line(broker.reserve(number)))


@numbers.command("remove")
@click.argument("number")
@click.pass_context
def numbers_remove(ctx, number) -> None:
    """Take NUMBER out of the pool (refused while it carries live bindings: reserve it first)."""
    with _pool(ctx) as broker:
        click.echo(_number_line(broker.remove(number)))


@numbers.command("list")
@click.option("--all", "include_removed", is_flag=True, help="Removed numbers too.")
@click.pass_context
def numbers_list(ctx, include_removed) -> None:
    """List the pool (number, state, live bindings), then its figures."""
    with _pool(ctx) as broker:
        for view in broker.numbers(include_removed=include_removed):
            click.echo(_number_line(view))
        f = broker.figures()
        click.echo(f"{f.active} active, {f.reserved} reserved, {f.in_use} in use, {f.free} free; "
                   f"{f.live_bindings} live binding(s), {f.extension_bindings} by extension")


@main.group()
def catalogue() -> None:
    """The dispatch catalogue: which departments handle each category, and in how many working days."""


@catalogue.command("load")
@click.argument("file", type=click.Path(dir_okay=False))
@click.pass_context
def catalogue_load(ctx, file) -> None:
    """Replace the whole catalogue with FILE's [[rule]] tables (see orders/catalogue.example.toml)."""
    with _departments(ctx) as store:
        count = store.load_catalogue(file)
    click.echo(f"{count} rules loaded from {file}")


@catalogue.command("list")
@click.pass_context
def catalogue_list(ctx) -> None:
    """List the rules: category, district (* = any), kind, lead, supporting, working days."""
    with _departments(ctx) as store:
        for rule in store.rules():
            click.echo("\t".join((rule.category, rule.district or "*", rule.kind, rule.lead,
                                  ",".join(rule.supporting) or "-", str(rule.answer_days))))


if __name__ == "__main__":
    main()


# --- agents ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _agents(ctx: click.Context):
    """The AgentStore for one command; its refusals are one line for the operator."""
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from queues.agents import AgentError

    try:
        with _services(_settings(ctx)) as services:
            yield services.agents
    except AgentError as exc:
        raise click.ClickException(str(exc)) from None


def _agent_line(agent) -> str:
    queues = ",".join(f"{q.queue}:{q.penalty}" for q in agent.queues) or "-"
    return "\t".join((agent.code, agent.name, agent.interface, ",".join(agent.languages), queues,
                      "active" if agent.active else "inactive"))


def _served(specs: tuple[str, ...]) -> list[tuple[str, int]]:
    """``hotline-zh`` or ``hotline-zh:2`` (queue, penalty) options."""
    served = []
    for spec in specs:
        queue, _, penalty = spec.partition(":")
        if penalty and not penalty.isdigit():
            raise click.BadParameter(f"{spec!r}: the penalty after ':' is a whole number", param_hint="--queue")
        served.append((queue, int(penalty or 0)))
    return served


@main.group()
def agents() -> None:
    """Agents: their softphones, languages and the queues they serve (log in with *71 or the web page)."""


@agents.command("add")
@click.argument("code")
@click.option("--name", required=True, help="The agent's name.")
@click.option("--interface", required=True, help="The softphone's device, e.g. PJSIP/agent1001.")
@click.option("--language", "languages", multiple=True, default=("zh-CN",), show_default=True,
              help="A language the agent speaks (zh-CN, en); repeat for several.")
@click.option("--queue", "queues", multiple=True, help="A queue served, with its penalty: hotline-zh or "
                                                        "hotline-zh:2; repeat for several.")
@click.pass_context
def agents_add(ctx, code, name, interface, languages, queues) -> None:
    """Add agent CODE (also its queue member name: queue_log and the wallboard show it)."""
    with _agents(ctx) as store:
        click.echo(_agent_line(store.add(code, name, interface, languages=languages, queues=_served(queues))))


@agents.command("queues")
@click.argument("code")
@click.option("--queue", "queues", multiple=True, help="hotline-zh or hotline-zh:2; repeat. None: no queue.")
@click.pass_context
def agents_queues(ctx, code, queues) -> None:
    """Set the queues agent CODE serves (they take effect at its next login)."""
    with _agents(ctx) as store:
        click.echo(_agent_line(store.set_queues(code, _served(queues))))


@agents.command("list")
@click.pass_context
def agents_list(ctx) -> None:
    """List agents: code, name, device, languages, queues:penalty, state (tab-separated)."""
    with _agents(ctx) as store:
        for agent in store.list():
            click.echo(_agent_line(agent))


@agents.command("retire")
@click.argument("code")
@click.pass_context
def agents_retire(ctx, code) -> None:
    """Stop agent CODE logging in (its history stays)."""
    with _agents(ctx) as store:
        click.echo(_agent_line(store.update(code, active=False)))


# --- the live queue figures ----------------------------------------------------------------------


@main.group("queue-stats")
def queue_stats() -> None:
    """The live queue figures kept in Redis."""


@queue_stats.command("rebuild")
@click.argument("queue_log", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def queue_stats_rebuild(ctx, queue_log) -> None:
    """Rebuild the figures from Asterisk's QUEUE_LOG file (after Redis lost them): read it whole, replace
    what Redis holds. Run it with the queue watch stopped, or it restarts the figures as events arrive."""
    # lazy: a command loads only what it runs, so `hotline call` and --help start fast
    from queues.queue_log import read_queue_log
    from queues.statistics import rebuild

    with embedded_redis(_settings(ctx)) as settings, _services(settings) as services:
        reader = read_queue_log(queue_log)
        events = rebuild(services.queue_statistics, reader)
        click.echo(f"{events} events from {reader.lines} lines ({reader.skipped} malformed, skipped)")


@queue_stats.command("show")
@click.pass_context
def queue_stats_show(ctx) -> None:
    """Print today's figures per queue and for the whole hotline (tab-separated)."""
    with embedded_redis(_settings(ctx)) as settings, _services(settings) as services:
        for queue, figures in services.queue_statistics.all_figures().items():
            d = figures.as_dict()
            level = "-" if d["service_level"] is None else f"{d['service_level']:.0%}"
            click.echo("\t".join((queue or "(hotline)", f"waiting {d['waiting']}", f"offered {d['offered']}",
                                  f"answered {d['answered']}", f"abandoned {d['abandoned']}",
                                  f"in {settings.stats_service_seconds} s {level}")))
