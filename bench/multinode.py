"""Beyond one machine: three `optflow serve` nodes on one PostgreSQL behind nginx, one of them
SIGKILLed mid-load and restarted. Do the two promises hold?

    .venv/bin/python -m bench.multinode          (or `make multinode`; `--help` for the knobs)

Everything runs on 127.0.0.1 on free ports: a throwaway PostgreSQL (scripts/with-postgres.sh,
unless DATABASE_URL or OPTFLOW_TEST_POSTGRES_URL names one), a fake Twilio Messages API in its own
process that journals every delivery (tests/fakes/twilio_api.py), three nodes each with its
scheduler in a managed process and the Twilio sender pointed at the fake, and Debian's nginx
round-robin in front of them (installed when missing and we are root).

Every contact is opted in on text and enrolled several times in a two-text drip
(bench/flows/multinode_drip.yaml) whose start times are spread over the load, so the
schedulers of all nodes claim and send due steps while signed Twilio webhooks arrive through
nginx: ordinary replies, and one STOP from each of a subset of the contacts. Each webhook is
retried as Twilio retries (connection error, timeout or 5xx; same MessageSid and signature)
until it is acknowledged or given up. Mid-load one node's whole process group gets SIGKILL;
it is started again a few seconds later.

The verdict, printed and written to bench/results/multinode.json (exit status 1 if any is
non-zero, 2 if the run could not test anything):
- opt-outs lost: STOPs acknowledged with a 200 that the database does not hold as opted_out
  with a ledger entry;
- sent after STOP: deliveries to a number the fake provider received after that number's STOP
  was acknowledged, beyond one opt-out confirmation;
- steps run twice: a drip step of one enrolment executed (or queued) more than once;
- duplicates at the provider: one outbox message delivered more than once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import Engine, func, insert
from sqlalchemy import select as sql_select
from twilio.request_validator import RequestValidator

from optflow.adapters import db, ledger_files, orm
from optflow.adapters.unit_of_work import SqlUnitOfWork, SqlUnitOfWorkFactory
from optflow.bootstrap import bootstrap
from optflow.config import Config
from optflow.service_layer.dispatcher import LEASE
from optflow.service_layer.ledger_audit import verify_ledger

from . import datasets as ds
from .load import ORDINARY, WEBHOOK_PATH, signature, twilio_params
from .procs import (
    ServerProcess,
    descendants,
    find_or_install,
    free_port,
    open_files,
    postgres_url,
    rerun_under_postgres,
    start_server,
    tcp_sockets,
)
from .scenarios import flows_directory

REPO = ds.BENCH_DIR.parent
RESULTS = ds.BENCH_DIR / "results"
FLOW = "multinode_drip"
DATABASE = "optflow_multinode"
# Twilio's standard opt-out keywords, as customers type them.
STOP_BODIES = ("STOP", "stop", "Stop", "STOPALL", "UNSUBSCRIBE", "Cancel", "QUIT", "End")
# Twilio's webhook limits with connection overrides (`#rc=5&rp=ct,rt,5xx`): at most 5 retries,
# on a failed connection, a read timeout or a 5xx, all within 15 s from the first attempt; the
# connect timeout is 5 s. The pauses between attempts are ours.
WEBHOOK_BUDGET = 15.0
CONNECT_TIMEOUT = 5.0
RETRY_PAUSES = (0.5, 1.0, 2.0, 2.0, 2.0)
KILL_WAIT = 15.0  # seconds the kill may wait for the node to be sending
DRIP_TAG = re.compile(r"\[(c\d+-\d+)/(\d)\]")


# ------------------------------------------------------------------------------------- settings

@dataclass(frozen=True)
class Plan:
    duration: float
    contacts: int
    enrolments: int  # per contact
    stops: int  # contacts that send STOP once
    rate: float  # inbound webhooks per second, STOPs included
    nodes: int
    workers: int  # web workers per node (plus the node's scheduler process)
    kill_at: float  # seconds into the load
    down: float  # seconds the killed node stays down
    settle: float  # at most this long after the load for due work to drain
    provider_delay: float
    seed: int

    @property
    def killed_node(self) -> int:
        return 1 if self.nodes > 1 else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.multinode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60; 10 to 300)")
    parser.add_argument("--contacts", type=int, default=300, help="contacts, all opted in on text (default 300)")
    parser.add_argument("--enrolments", type=int, default=3, help="drip enrolments per contact (default 3)")
    parser.add_argument("--stops", type=int, default=100, help="contacts that text STOP during the load (default 100)")
    parser.add_argument("--rate", type=float, default=15.0, help="inbound webhooks per second (default 15)")
    parser.add_argument("--nodes", type=int, default=3, help="optflow nodes (default 3)")
    parser.add_argument("--workers", type=int, default=1, help="web workers per node (default 1)")
    parser.add_argument("--kill-at", type=float, default=None,
                        help="seconds into the load when a node is SIGKILLed (default 40%% of the duration)")
    parser.add_argument("--down", type=float, default=5.0, help="seconds the killed node stays down (default 5)")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="at most this many seconds after the load for due work to drain (default 30)")
    parser.add_argument("--provider-delay", type=float, default=0.05,
                        help="seconds the fake provider takes to answer a send (default 0.05)")
    parser.add_argument("--seed", type=int, default=10, help="seed of the traffic and the drip's timing")
    parser.add_argument("--output", type=Path, default=RESULTS / "multinode.json", help="where to write the JSON")
    args = parser.parse_args(argv)
    if not 10 <= args.duration <= 300:
        parser.error("--duration must be between 10 and 300 seconds")
    if not 1 <= args.nodes <= 8 or not 1 <= args.workers <= 4:
        parser.error("--nodes must be 1 to 8 and --workers 1 to 4")
    if not 1 <= args.stops <= args.contacts or args.enrolments < 1 or args.rate <= 0:
        parser.error("--stops must be 1 to --contacts; --enrolments and --rate must be positive")
    return args


def plan_from(args: argparse.Namespace) -> Plan:
    kill_at = args.duration * 0.4 if args.kill_at is None else args.kill_at
    return Plan(args.duration, args.contacts, args.enrolments, args.stops, args.rate, args.nodes, args.workers,
                kill_at, args.down, args.settle, args.provider_delay, args.seed)


# ------------------------------------------------------------------------------------- database

@dataclass(frozen=True)
class _EveryoneOptedIn(ds.Dataset):
    def opted_in(self, i: int) -> bool:
        return True


def prepare_database(server_url: str, plan: Plan, log: Any) -> str:
    """A fresh database: the benchmark org (its Twilio auth token set), `plan.contacts` contacts
    opted in on text. Their enrolments come later (`enrol`), timed from the start of the load."""
    url = ds.postgres_database(server_url, DATABASE)
    ds.build_postgres(_EveryoneOptedIn("multinode", plan.contacts, 0), url, log)
    return url


def enrol(engine: Engine, plan: Plan, start: datetime) -> int:
    """Enrol every contact `plan.enrolments` times in the drip, the first steps due at moments
    spread evenly over the load (in a seeded random order). Inserted directly, as `FlowEngine.enroll`
    would run the first step at once: here the nodes' schedulers must claim every step."""
    version, source_file, source = ds.flow_version(FLOW)
    tags = [(contact, k) for contact in range(1, plan.contacts + 1) for k in range(plan.enrolments)]
    random.Random(plan.seed).shuffle(tags)
    span = plan.duration * 0.9
    rows = []
    for n, (contact, k) in enumerate(tags):
        due = start + timedelta(seconds=1 + span * n / len(tags))
        rows.append({"org_id": 1, "contact_id": contact, "flow_name": FLOW, "flow_version": version, "pc": 0,
                     "status": "active", "next_run_at": due, "event_json": json.dumps({"tag": f"c{contact}-{k}"}),
                     "started_at": start})
    with SqlUnitOfWork(engine) as uow:
        uow.enrollments.remember_version(FLOW, version, source_file, source, start)
        uow.conn.execute(insert(orm.enrollments), rows)
        uow.commit()
    return len(rows)


def after_the_lease(cluster: Cluster, log: Any) -> dict[str, Any]:
    """Deliver the outbox once as of the moment the killed node's leases have expired, as any
    node's dispatcher would ten minutes later: rows the dead node had claimed but not handed over
    (`sending`) are claimed and sent; a row it had handed over without recording the provider's
    answer (`handed_over`) is marked failed, outcome unknown, and not sent again. Run in this
    process after the nodes have stopped, with their configuration, so the whole benchmark stays
    minutes long."""
    credentials = cluster.provider_credentials
    config = Config(database_url=cluster.database_url, flows_dir=cluster.work / "server-flows", secret="bench-secret",
                    twilio_account_sid=credentials["account_sid"], twilio_auth_token=credentials["auth_token"],
                    twilio_from=ds.ORG_NUMBER, twilio_api_base_url=credentials["base_url"],
                    public_url=cluster.public_url)
    at = datetime.now(UTC) + LEASE + timedelta(minutes=1)
    system = bootstrap(config, create_schema=False)
    try:
        with system.engine.connect() as conn:
            leased: dict[str, int] = dict(conn.execute(sql_select(orm.messages.c.status, func.count()).where(
                orm.messages.c.status.in_(("sending", "handed_over"))).group_by(orm.messages.c.status)).all())
        outbox = system.dispatcher.run(at)
        with system.engine.connect() as conn:
            unknown = conn.execute(sql_select(func.count()).select_from(orm.messages).where(
                orm.messages.c.status == "failed", orm.messages.c.last_error.like("outcome unknown%"))).scalar_one()
    finally:
        system.close()
    claimed, handed_over = int(leased.get("sending", 0)), int(leased.get("handed_over", 0))
    log(f"  after the lease: {claimed} rows were still claimed and {handed_over} handed over unrecorded; the outbox "
        f"as of {LEASE} later sent {outbox.sent}, denied {outbox.denied}, marked {unknown} failed (outcome unknown)")
    return {"leased_rows": claimed, "handed_over_unrecorded": handed_over, "sent": outbox.sent,
            "denied": outbox.denied, "deferred": outbox.deferred, "failed": outbox.failed,
            "withdrawn": outbox.withdrawn, "failed_outcome_unknown": int(unknown)}


def due_work(engine: Engine, now: datetime) -> int:
    """Outbox rows and enrolment steps that are due and not done yet."""
    with engine.connect() as conn:
        queued = conn.execute(sql_select(func.count()).select_from(orm.messages).where(
            orm.messages.c.status == "queued", orm.messages.c.not_before <= now)).scalar_one()
        steps = conn.execute(sql_select(func.count()).select_from(orm.enrollments).where(
            orm.enrollments.c.status == "active", orm.enrollments.c.next_run_at <= now)).scalar_one()
    return int(queued) + int(steps)


# ------------------------------------------------------------------------------------- processes

@dataclass
class Cluster:
    """Every process of the run, each in its own session, all stopped by `stop` whatever happens."""

    work: Path
    database_url: str
    plan: Plan
    provider: ServerProcess | None = None
    provider_credentials: dict[str, str] = field(default_factory=dict)
    nodes: list[ServerProcess] = field(default_factory=list)
    node_ports: list[int] = field(default_factory=list)
    nginx: ServerProcess | None = None
    nginx_port: int = 0

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.nginx_port}"

    def start_provider(self) -> None:
        log_path = self.work / "provider.log"
        command = [sys.executable, "-m", "fakes.twilio_api", "--journal", str(self.work / "deliveries.jsonl"),
                   "--response-delay", str(self.plan.provider_delay)]
        process = subprocess.Popen(command, cwd=REPO / "tests", stdout=subprocess.PIPE, stderr=log_path.open("wb"),
                                   start_new_session=True)
        self.provider = ServerProcess("provider", process, "", log_path)
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        line = process.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(f"the fake provider did not start:\n{log_path.read_text(errors='replace')[-2000:]}")
        self.provider_credentials = json.loads(line)
        self.provider.base_url = self.provider_credentials["base_url"]

    def wait_until_sending(self, node: ServerProcess, until: float) -> bool:
        """Wait until `node` is delivering a batch of the outbox (the provider received a message
        within the last 0.2 s on a connection one of its processes holds), or until `until`
        (monotonic); whether it was caught sending. A SIGKILL then leaves messages the node had
        claimed, and perhaps one the provider accepted but the node never recorded."""
        assert self.provider is not None
        provider_port = int(self.provider.base_url.rsplit(":", 1)[1])
        recent: list[dict[str, Any]] = []
        with (self.work / "deliveries.jsonl").open(encoding="utf-8") as journal:
            journal.seek(0, os.SEEK_END)
            while time.monotonic() < until:
                for line in journal.readlines():
                    with contextlib.suppress(ValueError):  # a line caught half written
                        recent.append(json.loads(line))
                recent = [row for row in recent if row["at"] > time.time() - 0.2]
                ports = {row["client_port"] for row in recent}
                if ports:
                    sockets = set().union(*(open_files(pid) for pid in [node.process.pid,
                                                                         *descendants(node.process.pid)]))
                    if any(local in ports and remote == provider_port and f"socket:[{inode}]" in sockets
                           for local, remote, _, inode in tcp_sockets()):
                        return True
                time.sleep(0.02)
        return False

    def start_node(self, index: int) -> ServerProcess:
        port = self.node_ports[index]
        flows = flows_directory(self.work / "server-flows", REPO / "flows", ds.BENCH_FLOWS_DIR)
        command = [sys.executable, "-m", "optflow", "--database", self.database_url, "serve", "--host", "127.0.0.1",
                   "--port", str(port), "--workers", str(self.plan.workers), "--public-url", self.public_url]
        env = {"OPTFLOW_FLOWS_DIR": str(flows), "OPTFLOW_SECRET": "bench-secret",
               "TWILIO_ACCOUNT_SID": self.provider_credentials["account_sid"],
               "TWILIO_AUTH_TOKEN": self.provider_credentials["auth_token"],
               "TWILIO_FROM_NUMBER": ds.ORG_NUMBER, "TWILIO_API_BASE_URL": self.provider_credentials["base_url"]}
        return start_server(f"node{index + 1}", command, self.work / f"node{index + 1}.log", env=env,
                            cwd=self.work, port=port, timeout=90)

    def start_nodes(self) -> None:
        self.node_ports = [free_port() for _ in range(self.plan.nodes)]
        self.nginx_port = free_port()
        for index in range(self.plan.nodes):
            self.nodes.append(self.start_node(index))

    def start_nginx(self, binary: str) -> None:
        prefix = self.work / "nginx"
        (prefix / "temp").mkdir(parents=True, exist_ok=True)
        # nginx's workers drop root for `nobody`: they must be able to reach the temp directories.
        for path in (self.work, prefix, prefix / "temp"):
            path.chmod(0o755)
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_conf(self.nginx_port, self.node_ports, prefix), encoding="utf-8")
        command = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log"), "-g", "daemon off;"]
        self.nginx = start_server("nginx", command, prefix / "stdout.log", port=self.nginx_port, timeout=30)

    def stop_nodes(self) -> None:
        for process in [self.nginx, *self.nodes]:
            if process is not None:
                with contextlib.suppress(Exception):
                    process.stop()

    def stop(self) -> None:
        self.stop_nodes()
        if self.provider is not None:
            with contextlib.suppress(Exception):
                self.provider.stop()


def nginx_conf(port: int, node_ports: list[int], prefix: Path) -> str:
    """Round-robin over the nodes. A request goes to the next node only when it could not be
    sent to this one (connection refused, connect timeout): nginx never re-sends a POST that a
    node may have started to process (no `non_idempotent`). If a node dies mid-request, nginx
    answers 502 and Twilio's own retry, with the same MessageSid, reaches a live node, where the
    message is recognised if the dead node had committed it."""
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in node_ports)
    temp = prefix / "temp"
    return f"""worker_processes 1;
pid {prefix}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    log_format upstream '$msec $status "$upstream_addr" "$upstream_status" $request_time';
    access_log {prefix}/access.log upstream;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    upstream optflow {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://optflow;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_connect_timeout 1s;
            proxy_read_timeout 15s;
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
        }}
    }}
}}
"""


# ------------------------------------------------------------------------------------- inbound traffic

@dataclass
class Webhook:
    """One inbound text as Twilio posts it, and what became of it."""

    due: float  # seconds into the load
    sender: str
    body: str
    sid: str
    stop: bool
    attempts: int = 0
    outcomes: list[str] = field(default_factory=list)  # per attempt: status code or error name
    first_at: float | None = None  # wall-clock time of the first attempt
    acked_at: float | None = None  # wall-clock time the 200 arrived

    def as_dict(self) -> dict[str, Any]:
        return {"sid": self.sid, "stop": self.stop, "attempts": self.attempts, "outcomes": self.outcomes,
                "acknowledged": self.acked_at is not None}


def plan_traffic(plan: Plan) -> list[Webhook]:
    """`plan.rate` webhooks a second over the load: one STOP from each of `plan.stops` contacts,
    ordinary replies from any contact for the rest."""
    rng = random.Random(plan.seed)
    total = max(int(plan.rate * plan.duration), plan.stops)
    stoppers = rng.sample(range(1, plan.contacts + 1), plan.stops)
    hooks = [Webhook(rng.uniform(1, plan.duration * 0.95), ds.contact_number(c), rng.choice(STOP_BODIES), "", True)
             for c in stoppers]
    hooks += [Webhook(rng.uniform(0, plan.duration), ds.contact_number(rng.randint(1, plan.contacts)),
                      rng.choice(ORDINARY), "", False) for _ in range(total - plan.stops)]
    hooks.sort(key=lambda hook: hook.due)
    for n, hook in enumerate(hooks):
        hook.sid = f"SM{plan.seed:04x}{n:028x}"
    return hooks


async def post_as_twilio(client: httpx.AsyncClient, url: str, hook: Webhook, start: float) -> None:
    """POST `hook` at its moment and retry as Twilio does until a 200, a 4xx, or the budget ends."""
    await asyncio.sleep(max(0.0, start + hook.due - time.monotonic()))
    params = twilio_params(hook.sender, hook.body, hook.sid)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature(url, params),
               "I-Twilio-Idempotency-Token": f"idem-{hook.sid}"}
    content = urlencode(params).encode()
    hook.first_at = time.time()
    budget_ends = time.monotonic() + WEBHOOK_BUDGET
    for attempt, pause in enumerate((*RETRY_PAUSES, None), start=1):
        hook.attempts = attempt
        left = budget_ends - time.monotonic()
        try:
            response = await client.post(url, content=content, headers=headers,
                                         timeout=httpx.Timeout(left, connect=min(CONNECT_TIMEOUT, left)))
        except httpx.TransportError as exc:
            hook.outcomes.append(type(exc).__name__)
        else:
            hook.outcomes.append(str(response.status_code))
            if response.status_code == 200:
                hook.acked_at = time.time()
                return
            if response.status_code < 500:
                return  # Twilio does not retry a 4xx
        if pause is None or time.monotonic() + pause >= budget_ends:
            return
        await asyncio.sleep(pause)


async def drive(cluster: Cluster, hooks: list[Webhook], log: Any) -> dict[str, Any]:
    """Send the traffic through nginx while a node is SIGKILLed and restarted; the timeline."""
    plan = cluster.plan
    url = cluster.public_url + WEBHOOK_PATH
    probe = twilio_params(hooks[0].sender, hooks[0].body, hooks[0].sid)
    if not RequestValidator(ds.TWILIO_TOKEN).validate(url, probe, signature(url, probe)):
        raise AssertionError("the benchmark signs webhooks differently from the twilio library")
    timeline: dict[str, Any] = {}
    start = time.monotonic()

    def kill_and_restart() -> None:
        time.sleep(max(0.0, start + plan.kill_at - time.monotonic()))
        index = plan.killed_node
        victim = cluster.nodes[index]
        timeline["killed_mid_send"] = cluster.wait_until_sending(victim, time.monotonic() + KILL_WAIT)
        pids = [victim.process.pid, *descendants(victim.process.pid)]
        timeline["killed_at_s"] = round(time.monotonic() - start, 2)
        victim.kill()
        log(f"  {timeline['killed_at_s']:.1f} s: SIGKILL to node{index + 1} ({len(pids)} processes), "
            f"{'while' if timeline['killed_mid_send'] else 'not caught'} sending to the provider")
        time.sleep(plan.down)
        timeline["killed_processes"] = len(pids)
        timeline["survivors_of_kill"] = sum(1 for pid in pids if Path(f"/proc/{pid}").exists()
                                            and "zombie" not in _state(pid))
        timeline["restart_began_s"] = round(time.monotonic() - start, 2)
        cluster.nodes[index] = cluster.start_node(index)
        timeline["restarted_at_s"] = round(time.monotonic() - start, 2)
        log(f"  {timeline['restarted_at_s']:.1f} s: node{index + 1} answers again")

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits) as client:
        killer = asyncio.get_running_loop().run_in_executor(None, kill_and_restart)
        await asyncio.gather(*(post_as_twilio(client, url, hook, start) for hook in hooks))
        await killer
    timeline["load_s"] = round(time.monotonic() - start, 2)
    return timeline


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0]
    except (OSError, IndexError):
        return ""


# ------------------------------------------------------------------------------------- verdict

@dataclass(frozen=True)
class Delivery:
    at: float
    to: str
    body: str
    status: int
    sid: str | None

    @property
    def drip_tag(self) -> str | None:
        match = DRIP_TAG.search(self.body)
        return f"{match[1]}/{match[2]}" if match else None


def read_deliveries(path: Path) -> list[Delivery]:
    deliveries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            deliveries.append(Delivery(row["at"], row["to"] or "", row["body"] or "", row["status"], row["sid"]))
    return deliveries


def check(engine: Engine, hooks: list[Webhook], deliveries: list[Delivery]) -> dict[str, Any]:
    """The promises, counted from the database and the provider's journal."""
    accepted = [d for d in deliveries if d.status == 201]
    with engine.connect() as conn:
        consents = {row.address: row.state for row in conn.execute(sql_select(
            orm.consents.c.address, orm.consents.c.state).where(orm.consents.c.channel == "text"))}
        opt_out_sources = set(conn.execute(sql_select(orm.ledger.c.source_message_id).where(
            orm.ledger.c.to_state == "opted_out")).scalars())
        inbound_sids = set(conn.execute(sql_select(orm.messages.c.provider_id).where(
            orm.messages.c.direction == "in")).scalars())
        outbound = conn.execute(sql_select(orm.messages.c.body, orm.messages.c.status, orm.messages.c.provider_id,
                                           orm.messages.c.enrollment_id, orm.messages.c.last_error).where(
            orm.messages.c.direction == "out")).all()
        steps = conn.execute(sql_select(orm.enrollment_steps.c.enrollment_id, orm.enrollment_steps.c.pc,
                                        orm.enrollment_steps.c.outcome)).all()
    # with the keys and checkpoints the nodes used
    chain_problems = len(verify_ledger(SqlUnitOfWorkFactory(engine), 1).problems)

    # A STOP is recorded when the ledger holds the opt-out it caused (its MessageSid is the
    # entry's source) and the consent has not become opted_in since. A later ordinary text from
    # the contact may move the consent on to `requested` (optflow asks whether to opt back in);
    # that is not consent to market, so it counts as kept.
    acked_stops = [h for h in hooks if h.stop and h.acked_at is not None]
    lost = [h.sender for h in acked_stops
            if h.sid not in opt_out_sources or consents.get(h.sender) not in ("opted_out", "requested")]
    re_requested = sum(1 for h in acked_stops if consents.get(h.sender) == "requested")
    acked = [h for h in hooks if h.acked_at is not None]
    unstored = [h.sid for h in acked if h.sid not in inbound_sids]

    after_stop: list[dict[str, Any]] = []
    between_receipt_and_ack = 0
    for hook in acked_stops:
        assert hook.acked_at is not None and hook.first_at is not None
        later = [d for d in accepted if d.to == hook.sender and d.at > hook.acked_at]
        drip = [d for d in later if d.drip_tag]
        others = [d for d in later if not d.drip_tag]
        excess = len(drip) + max(0, len(others) - 1)  # one opt-out confirmation may follow a STOP
        if excess:
            after_stop.append({"contact": _contact(hook.sender), "stop_acknowledged_at": hook.acked_at,
                               "deliveries": [{"after_ack_s": round(d.at - hook.acked_at, 3), "drip": d.drip_tag}
                                              for d in later]})
        between_receipt_and_ack += sum(1 for d in accepted if d.to == hook.sender and d.drip_tag
                                       and hook.first_at < d.at <= hook.acked_at)
    sent_after_stop = sum(len([d for d in entry["deliveries"] if d["drip"]])
                          + max(0, len([d for d in entry["deliveries"] if not d["drip"]]) - 1)
                          for entry in after_stop)

    rows_per_body = Counter(row.body for row in outbound)
    deliveries_per_message = Counter((d.to, d.body) for d in accepted)
    provider_duplicates = sum(max(0, count - rows_per_body.get(body, 1))
                              for (_, body), count in deliveries_per_message.items())
    queued_twice = sum(count - 1 for body, count in rows_per_body.items() if count > 1 and DRIP_TAG.search(body))
    executed = Counter((row.enrollment_id, row.pc) for row in steps if row.outcome.startswith("queued"))
    steps_twice = sum(count - 1 for count in executed.values() if count > 1)

    recorded_sids = {row.provider_id for row in outbound if row.provider_id}
    status_counts = Counter(row.status for row in outbound if row.enrollment_id is not None)
    # Why drip rows were not sent: the policy's reason (denied), or the dispatcher's (failed).
    not_sent_reasons = Counter(f"{row.status}: {row.last_error}" for row in outbound
                               if row.enrollment_id is not None and row.status in ("denied", "failed"))
    return {
        "promises": {
            "opt_outs_acknowledged": len(acked_stops),
            "opt_outs_recorded": len(acked_stops) - len(lost),
            "opt_outs_lost": len(lost),
            "sent_after_stop": sent_after_stop,
            "steps_run_twice": max(steps_twice, queued_twice),
            "provider_duplicates": provider_duplicates,
        },
        "also": {
            "acknowledged_webhooks_not_stored": len(unstored),
            "stopped_contacts_asked_to_opt_in_again": re_requested,
            "ledger_chain_problems": chain_problems,
            "drip_sent_between_stop_receipt_and_ack": between_receipt_and_ack,
            "steps_executed_twice_in_history": steps_twice,
            "drip_steps_queued_twice_in_outbox": queued_twice,
            "deliveries_not_recorded_as_sent": sum(1 for d in accepted if d.sid not in recorded_sids),
            "drip_outbox_by_status": dict(sorted(status_counts.items())),
            "drip_not_sent_reasons": dict(sorted(not_sent_reasons.items())),
        },
        "deliveries": {"accepted": len(accepted), "drip": sum(1 for d in accepted if d.drip_tag),
                       "other": sum(1 for d in accepted if not d.drip_tag), "refused": len(deliveries) - len(accepted)},
        "sent_after_stop_detail": after_stop[:20],
        "lost_opt_outs_detail": [_contact(n) for n in lost[:20]],
    }


def _contact(number: str) -> int:
    """The benchmark contact of a number (`datasets.contact_number` backwards): reports name
    contacts, never phone numbers."""
    return int(number[-7:]) - 2_000_000


def inbound_summary(hooks: list[Webhook]) -> dict[str, Any]:
    outcomes = Counter(outcome for hook in hooks for outcome in hook.outcomes)
    return {
        "webhooks": len(hooks), "stops": sum(1 for h in hooks if h.stop),
        "acknowledged": sum(1 for h in hooks if h.acked_at is not None),
        "stops_acknowledged": sum(1 for h in hooks if h.stop and h.acked_at is not None),
        "retried": sum(1 for h in hooks if h.attempts > 1),
        "given_up": [h.as_dict() for h in hooks if h.acked_at is None][:20],
        "given_up_count": sum(1 for h in hooks if h.acked_at is None),
        "attempt_outcomes": dict(sorted(outcomes.items())),
    }


def nginx_summary(access_log: Path, node_ports: list[int]) -> dict[str, Any]:
    """Requests per node as nginx chose them, and those it passed on to another node."""
    per_node: Counter[str] = Counter()
    passed_on = answered_502 = 0
    if access_log.exists():
        for line in access_log.read_text(encoding="utf-8").splitlines():
            parts = line.split('"')
            if len(parts) < 4:
                continue
            status = line.split()[1]
            upstreams = [u.strip() for u in parts[1].split(",")]
            passed_on += len(upstreams) > 1
            answered_502 += status == "502"
            per_node[upstreams[-1]] += 1
    names = {f"127.0.0.1:{port}": f"node{i + 1}" for i, port in enumerate(node_ports)}
    return {"requests_per_node": {names.get(k, k): v for k, v in sorted(per_node.items())},
            "passed_to_another_node": passed_on, "answered_502": answered_502}


def revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return head + ("+uncommitted" if git("status", "--porcelain", "--untracked-files=no") else "")


# ------------------------------------------------------------------------------------- main

class _OutOfTime(Exception):
    pass


def _raise_out_of_time(signum: int, frame: FrameType | None) -> None:
    raise _OutOfTime(f"signal {signum}")


@contextlib.contextmanager
def time_bound(seconds: int) -> Iterator[None]:
    """The whole run ends within `seconds`, and SIGTERM ends it too, cleaning up either way."""
    previous = signal.signal(signal.SIGALRM, _raise_out_of_time), signal.signal(signal.SIGTERM, _raise_out_of_time)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = plan_from(args)
    server_url = postgres_url(True)
    if server_url is None:
        return rerun_under_postgres("bench.multinode", argv)
    nginx = find_or_install("nginx", ("nginx-light", "nginx"))
    if nginx is None:
        print("nginx is not available and could not be installed (Debian: apt-get install nginx-light)",
              file=sys.stderr)
        return 2

    def log(line: str) -> None:
        print(line, flush=True)

    ds.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="multinode-", dir=ds.CACHE_DIR))
    bound = int(plan.duration + plan.settle + 150)
    report: dict[str, Any] = {"revision": revision(), "database": "postgresql", "plan": plan.__dict__,
                              "started": datetime.now(UTC).isoformat(timespec="seconds")}
    log(f"multinode: {plan.nodes} nodes x {plan.workers} web worker(s) + scheduler, nginx, one PostgreSQL; "
        f"{plan.duration:.0f} s of load; whole run bounded to {bound} s; logs in {work}")
    started = time.monotonic()
    cluster: Cluster | None = None
    engine: Engine | None = None
    try:
        with time_bound(bound):
            database_url = prepare_database(server_url, plan, lambda line: log(line))
            engine = db.make_engine(database_url)
            # The nodes' ledger keys and checkpoint file (the same default place on this machine).
            ledger_files.attach(engine, ledger_files.load_or_create(Config.from_env(database_url=database_url),
                                                                    engine))
            cluster = Cluster(work, database_url, plan)
            cluster.start_provider()
            cluster.start_nodes()
            cluster.start_nginx(nginx)
            log(f"  nodes on ports {', '.join(map(str, cluster.node_ports))}, nginx on {cluster.nginx_port}, "
                f"provider at {cluster.provider_credentials['base_url']}")
            hooks = plan_traffic(plan)
            enrolled = enrol(engine, plan, datetime.now(UTC))
            log(f"  {enrolled} enrolments due over the load; {len(hooks)} webhooks ({plan.stops} STOPs)")
            report["timeline"] = asyncio.run(drive(cluster, hooks, log))
            settle_until = time.monotonic() + plan.settle
            while due_work(engine, datetime.now(UTC)) and time.monotonic() < settle_until:
                time.sleep(1)
            report["timeline"]["due_left_after_settle"] = due_work(engine, datetime.now(UTC))
            cluster.stop_nodes()
            report["after_lease_expiry"] = after_the_lease(cluster, log)
            cluster.stop()
            report["inbound"] = inbound_summary(hooks)
            report["nginx"] = nginx_summary(work / "nginx" / "access.log", cluster.node_ports)
            report.update(check(engine, hooks, read_deliveries(work / "deliveries.jsonl")))
    except _OutOfTime as exc:
        log(f"the run was stopped ({exc}) before it finished; logs in {work}")
        return 2
    finally:
        if cluster is not None:
            cluster.stop()
        if engine is not None:
            engine.dispose()
    report["seconds"] = round(time.monotonic() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return verdict(report, work, args.output, log)


def verdict(report: dict[str, Any], work: Path, output: Path, log: Any) -> int:
    promises, also, inbound = report["promises"], report["also"], report["inbound"]
    log("")
    log(f"optflow multinode run at {report['revision']}: {report['seconds']:.0f} s")
    log(f"  webhooks: {inbound['webhooks']} sent, {inbound['acknowledged']} acknowledged, {inbound['retried']} "
        f"retried, {inbound['given_up_count']} given up; per node {report['nginx']['requests_per_node']}")
    log(f"  provider: {report['deliveries']['accepted']} deliveries ({report['deliveries']['drip']} drip)")
    log(f"  opt-outs acknowledged {promises['opt_outs_acknowledged']}, recorded {promises['opt_outs_recorded']}")
    for name in ("opt_outs_lost", "sent_after_stop", "steps_run_twice", "provider_duplicates"):
        log(f"  {name.replace('_', ' '):<24} {promises[name]}")
    for name, value in also.items():
        log(f"  ({name.replace('_', ' ')}: {value})")
    log(f"\nresults: {output}")
    if not inbound["stops_acknowledged"] or not report["deliveries"]["drip"] or "killed_at_s" not in report["timeline"]:
        log("the run tested nothing: no STOP acknowledged, no drip delivered, or no node killed")
        return 2
    failed = any(promises[name] for name in ("opt_outs_lost", "sent_after_stop", "steps_run_twice",
                                             "provider_duplicates"))
    failed = failed or bool(also["acknowledged_webhooks_not_stored"] or also["ledger_chain_problems"])
    if failed:
        log(f"PROMISES BROKEN; logs kept in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
