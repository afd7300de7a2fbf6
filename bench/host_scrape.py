#!/usr/bin/env python3
"""Measuring half of bench/host-scrape (python3 standard library only).

bench/host-scrape builds the agent, starts it and node_exporter, waits until
both answer, and hands their PIDs and ports to this program, which measures
both side by side and prints a Markdown report (and, with --write-docs,
writes it into docs/benchmarks.md between the results markers).

What is measured, in order (see docs/benchmarks.md for why):

1. warm-up: 50 scrapes each, not counted;
2. idle: both exporters left alone for --idle seconds; the CPU each uses is
   its background cost (for the agent: its sampler threads at the default
   intervals);
3. scrapes: N sequential scrapes each, a fresh TCP connection per scrape,
   in 10 blocks alternating between the two exporters (ABBA...), so that
   whatever else the machine is doing hits both alike; latency is from
   connect() to the end of the body, CPU is read before and after each block;
4. RSS (VmRSS) of each exporter after its N scrapes, then the floor: N/2
   requests for a tiny response (agent /-/healthy, node_exporter's landing
   page), the cost of a connection and an HTTP exchange alone;
5. wrk -t2 -c16 -d10s against each, one after the other.

CPU time is read two ways: the process CPU clock (clock_gettime on the
clock of another process, nanoseconds, all threads, including exited ones)
and utime+stime from /proc/PID/stat (clock ticks, 10 ms each on most
kernels). The headline figure uses the CPU clock: the agent's share of a
1000-scrape loop is a few ticks, too few to resolve with /proc/PID/stat
alone; the stat figure is printed beside it as a cross-check.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
BLOCKS = 10
WARMUP = 50

# The Accept header Prometheus 2.x sends on every scrape.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,"
    "application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

# Targets from the issue: (key, description, kind, bound).
#   kind "ratio<=": agent/node_exporter must be <= bound
#   kind "ratio>=": agent/node_exporter must be >= bound
#   kind "abs<=":   the agent's value must be <= bound
TARGETS = [
    ("latency_median_ms", "median scrape latency", "ratio<=", 0.1),
    ("cpu_per_scrape_ms", "CPU per scrape", "ratio<=", 0.05),
    ("wrk_rps", "wrk throughput", "ratio>=", 10.0),
    ("rss_mb", "RSS after the scrapes", "abs<=", 10.0),
]

RESULTS_BEGIN = "<!-- results:begin (written by bench/host-scrape --write-docs) -->"
RESULTS_END = "<!-- results:end -->"


class Exporter:
    def __init__(self, name: str, pid: int, port: int, request: bytes, floor_request: bytes):
        self.name = name
        self.pid = pid
        self.port = port
        self.request = request
        self.floor_request = floor_request
        self.clock = ((~pid) << 3) | 2  # CPUCLOCK_SCHED of the whole process
        self.latencies_ns: list[int] = []
        self.scrape_cpu_ns = 0
        self.scrape_ticks = 0
        self.scrape_wall_ns = 0
        self.m: dict[str, float] = {}

    def cpu_ns(self) -> int:
        return time.clock_gettime_ns(self.clock)

    def ticks(self) -> int:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime

    def status_kb(self, key: str) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"{key} missing from /proc/{self.pid}/status")

    def alive(self) -> None:
        if not os.path.exists(f"/proc/{self.pid}"):
            sys.exit(f"host-scrape: {self.name} (pid {self.pid}) has exited")

    def scrape(self, request: bytes | None = None) -> tuple[int, bytes]:
        """One request on a fresh connection: (nanoseconds, response)."""
        t0 = time.perf_counter_ns()
        s = socket.create_connection(("127.0.0.1", self.port))
        try:
            s.sendall(request or self.request)
            chunks = []
            while True:
                b = s.recv(1 << 18)
                if not b:
                    break
                chunks.append(b)
            t1 = time.perf_counter_ns()
        finally:
            s.close()
        resp = b"".join(chunks)
        if not resp.startswith(b"HTTP/1.1 200"):
            sys.exit(f"host-scrape: {self.name} answered {resp[:80]!r}")
        return t1 - t0, resp


def request_bytes(port: int, mode: str, path: str = "/metrics") -> bytes:
    headers = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "User-Agent: host-scrape"]
    if mode == "prometheus":
        headers += [f"Accept: {PROMETHEUS_ACCEPT}", "Accept-Encoding: gzip",
                    "X-Prometheus-Scrape-Timeout-Seconds: 10"]
    elif mode == "gzip":
        headers += ["Accept: */*", "Accept-Encoding: gzip"]
    else:
        headers += ["Accept: */*"]
    headers.append("Connection: close")
    return ("\r\n".join(headers) + "\r\n\r\n").encode()


def body_facts(resp: bytes) -> dict[str, float]:
    head, _, body = resp.partition(b"\r\n\r\n")
    head_l = head.lower()
    if b"transfer-encoding: chunked" in head_l:
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line.split(b";")[0], 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    wire = len(body)
    if b"content-encoding: gzip" in head_l:
        import gzip
        body = gzip.decompress(body)
    samples = sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))
    ctype = re.search(rb"(?im)^content-type:\s*([^;\r\n]+)", head)
    return {"body_bytes": wire, "text_bytes": len(body), "samples": samples,
            "content_type": ctype.group(1).decode() if ctype else "?"}


def percentile(sorted_ns: list[int], p: float) -> float:
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_ns) - 1, int(-(-p * len(sorted_ns) // 100)) - 1))
    return sorted_ns[k]


def run_wrk(e: Exporter, duration: int, mode: str) -> None:
    cmd = ["wrk", "-t2", "-c16", f"-d{duration}s"]
    if mode == "prometheus":
        cmd += ["-H", f"Accept: {PROMETHEUS_ACCEPT}", "-H", "Accept-Encoding: gzip"]
    elif mode == "gzip":
        cmd += ["-H", "Accept-Encoding: gzip"]
    cmd.append(f"http://127.0.0.1:{e.port}/metrics")
    c0 = e.cpu_ns()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    c1 = e.cpu_ns()
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not rps or not total:
        sys.exit(f"host-scrape: cannot read wrk's output:\n{out}")
    e.m["wrk_rps"] = float(rps.group(1))
    e.m["wrk_requests"] = int(total.group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    e.m["wrk_non2xx"] = int(non2xx.group(1)) if non2xx else 0
    sock = re.search(r"Socket errors:(.*)", out)
    e.m["wrk_socket_errors"] = sock.group(1).strip() if sock else "none"
    e.m["wrk_cpu_per_req_us"] = (c1 - c0) / 1e3 / max(1, e.m["wrk_requests"])
    e.m["wrk_cpu_cores"] = (c1 - c0) / 1e9 / duration


def machine_facts(a: argparse.Namespace) -> list[tuple[str, str]]:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ne_version = subprocess.run([a.ne_bin, "--version"], capture_output=True, text=True)
    ne_version = (ne_version.stdout + ne_version.stderr).splitlines()[0].strip()
    agent_version = subprocess.run([a.agent_bin, "--version"], capture_output=True, text=True)
    agent_version = agent_version.stdout.strip()
    tree = subprocess.run(["git", "-C", a.repo, "describe", "--always", "--dirty", "--abbrev=12"],
                          capture_output=True, text=True).stdout.strip() or "?"
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return [
        ("CPU", f"{cpu}, {os.cpu_count()} CPUs (nproc {os.sched_getaffinity(0).__len__()})"),
        ("memory", f"{mem_kb / 1024 / 1024:.1f} GiB"),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("node_exporter", ne_version),
        ("accel-agent", f"{agent_version}; working tree {tree}; binary {a.agent_src}"),
    ]


def fmt(v: float, digits: int = 3) -> str:
    if isinstance(v, str):
        return v
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{digits}f}".rstrip("0").rstrip(".")


def ratio(a: float, b: float) -> str:
    if not b:
        return "–"
    return f"{a / b:.3g}x"


def report(a, facts, agent: Exporter, ne: Exporter, started: str, load0: str, load1: str) -> str:
    A, N = agent.m, ne.m
    rows = [
        ("scrape latency, min (ms)", "latency_min_ms"),
        ("scrape latency, median (ms)", "latency_median_ms"),
        ("scrape latency, p99 (ms)", "latency_p99_ms"),
        ("scrape latency, max (ms)", "latency_max_ms"),
        ("floor: median latency of a tiny response (ms)", "floor_median_ms"),
        ("CPU per scrape, net of background (ms)", "cpu_per_scrape_ms"),
        ("CPU per scrape, raw, process CPU clock (ms)", "cpu_per_scrape_raw_ms"),
        ("CPU per scrape, raw, /proc/PID/stat (ms)", "cpu_per_scrape_stat_ms"),
        ("floor: CPU per tiny response, net (ms)", "floor_cpu_ms"),
        (f"RSS (VmRSS) after {a.scrapes} scrapes (MB)", "rss_mb"),
        ("peak RSS (VmHWM) at the end (MB)", "hwm_mb"),
        ("wrk -t2 -c16 throughput (requests/s)", "wrk_rps"),
        ("CPU per request under wrk (µs)", "wrk_cpu_per_req_us"),
        ("CPU used under wrk (cores)", "wrk_cpu_cores"),
        ("response body on the wire (bytes)", "body_bytes"),
        ("response text (bytes)", "text_bytes"),
        ("samples in the response", "samples"),
        ("background CPU while idle (CPU s per minute)", "idle_cpu_s_per_min"),
    ]
    out = []
    out.append(f"### Run of {started}\n")
    if a.note:
        out.append(f"**{a.note}**\n")
    out.append(f"Command: `{a.command}`; request headers: {a.request} "
               f"({'Accept: */*, no compression' if a.request == 'plain' else 'Accept-Encoding: gzip' if a.request == 'gzip' else 'what Prometheus 2.x sends: OpenMetrics preferred, gzip'}); "
               f"{a.scrapes} scrapes each, idle period {a.idle} s, wrk {a.wrk_duration} s.\n")
    out.append("| machine | |\n|---|---|")
    for k, v in facts:
        out.append(f"| {k} | {v} |")
    out.append(f"| load average (1, 5, 15 min) | at start {load0}; at end {load1} |")
    out.append("")
    out.append("| measure | accel-agent | node_exporter | agent / node_exporter |")
    out.append("|---|---:|---:|---:|")
    for label, key in rows:
        out.append(f"| {label} | {fmt(A[key])} | {fmt(N[key])} | {ratio(A[key], N[key])} |")
    out.append("")
    errs = [f"{e.name}: {e.m['wrk_non2xx']} non-2xx, socket errors {e.m['wrk_socket_errors']}"
            for e in (agent, ne) if e.m["wrk_non2xx"] or e.m["wrk_socket_errors"] != "none"]
    if errs:
        out.append("wrk errors: " + "; ".join(errs) + "\n")
    if A["content_type"] != N["content_type"]:
        out.append(f"Content types differ: accel-agent served {A['content_type']}, "
                   f"node_exporter {N['content_type']}.\n")
    out.append(f"Agent background sampling cost (5 collectors at their default intervals, "
               f"measured over {a.idle} s idle): **{fmt(A['idle_cpu_s_per_min'])} CPU seconds per "
               f"minute** ({fmt(A['idle_cpu_s_per_min'] / 60 * 100)} % of one core); node_exporter "
               f"idle: {fmt(N['idle_cpu_s_per_min'])} CPU s/min. \"Net of background\" subtracts "
               f"each exporter's idle rate times the wall time of its scrape blocks "
               f"({fmt(A['bg_share_ms'])} ms of the agent's {fmt(A['scrape_cpu_total_ms'])} ms).\n")
    out.append("| target (issue 2) | measured | result |")
    out.append("|---|---|---|")
    for key, desc, kind, bound in TARGETS:
        if kind == "abs<=":
            v = A[key]
            ok = v <= bound
            measured = f"{fmt(v)} MB"
            want = f"≤ {fmt(bound)} MB"
            miss = "" if ok else f": {fmt(v - bound)} MB ({(v / bound - 1) * 100:.0f} %) over"
        else:
            v = A[key] / N[key] if N[key] else float("inf")
            measured = f"{v:.3g}x ({fmt(A[key])} vs {fmt(N[key])})"
            if kind == "ratio<=":
                ok = v <= bound
                want = f"≤ {bound:g}x"
                miss = "" if ok else f": {(v / bound - 1) * 100:.0f} % above the bound"
            else:
                ok = v >= bound
                want = f"≥ {bound:g}x"
                miss = "" if ok else f": {(1 - v / bound) * 100:.0f} % below the bound"
        out.append(f"| {desc} {want} | {measured} | {'pass' if ok else 'FAIL' + miss} |")
    out.append("")
    return "\n".join(out)


def write_docs(path: str, text: str) -> None:
    with open(path) as f:
        doc = f.read()
    i, j = doc.find(RESULTS_BEGIN), doc.find(RESULTS_END)
    if i < 0 or j < i:
        sys.exit(f"host-scrape: {path} lacks the markers\n  {RESULTS_BEGIN}\n  {RESULTS_END}")
    doc = doc[: i + len(RESULTS_BEGIN)] + "\n\n" + text.rstrip() + "\n\n" + doc[j:]
    with open(path, "w") as f:
        f.write(doc)
    print(f"host-scrape: results written into {path}", file=sys.stderr)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return ", ".join(f.read().split()[:3])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scrapes", type=int, default=1000)
    p.add_argument("--idle", type=int, default=60)
    p.add_argument("--wrk-duration", type=int, default=10)
    p.add_argument("--request", choices=["plain", "gzip", "prometheus"], default="plain")
    p.add_argument("--agent-pid", type=int, required=True)
    p.add_argument("--agent-port", type=int, required=True)
    p.add_argument("--agent-bin", required=True)
    p.add_argument("--agent-src", default="")
    p.add_argument("--agent-args", default="")
    p.add_argument("--ne-pid", type=int, required=True)
    p.add_argument("--ne-port", type=int, required=True)
    p.add_argument("--ne-bin", required=True)
    p.add_argument("--ne-args", default="")
    p.add_argument("--repo", default=".")
    p.add_argument("--command", default="bench/host-scrape")
    p.add_argument("--note", default="")
    p.add_argument("--write-docs", metavar="PATH")
    a = p.parse_args()

    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load0 = loadavg()
    agent = Exporter("accel-agent", a.agent_pid, a.agent_port,
                     request_bytes(a.agent_port, a.request),
                     request_bytes(a.agent_port, "plain", "/-/healthy"))
    ne = Exporter("node_exporter", a.ne_pid, a.ne_port, request_bytes(a.ne_port, a.request),
                  request_bytes(a.ne_port, "plain", "/"))
    both = (agent, ne)
    facts = machine_facts(a)
    log = lambda msg: print(f"host-scrape: {msg}", file=sys.stderr, flush=True)

    # 1. warm-up, and what each serves
    for e in both:
        for _ in range(WARMUP):
            e.scrape()
        e.m.update(body_facts(e.scrape()[1]))

    # 2. idle: the background cost
    log(f"idle period, {a.idle} s")
    c0 = [(e.cpu_ns(), e.ticks()) for e in both]
    t0 = time.monotonic_ns()
    time.sleep(a.idle)
    wall = time.monotonic_ns() - t0
    for e, (c, _) in zip(both, c0):
        e.m["idle_rate"] = (e.cpu_ns() - c) / wall  # CPU ns per wall ns
        e.m["idle_cpu_s_per_min"] = e.m["idle_rate"] * 60

    # 3. the scrapes, in alternating blocks
    log(f"{a.scrapes} scrapes each, in {BLOCKS} alternating blocks")
    per_block = [a.scrapes // BLOCKS + (1 if i < a.scrapes % BLOCKS else 0) for i in range(BLOCKS)]
    for i, n in enumerate(per_block):
        for e in (both if i % 2 == 0 else both[::-1]):
            e.alive()
            c, k, w = e.cpu_ns(), e.ticks(), time.monotonic_ns()
            for _ in range(n):
                e.latencies_ns.append(e.scrape()[0])
            w, k, c = time.monotonic_ns() - w, e.ticks() - k, e.cpu_ns() - c
            e.scrape_cpu_ns += c
            e.scrape_ticks += k
            e.scrape_wall_ns += w
    for e in both:
        lat = sorted(e.latencies_ns)
        e.m["latency_min_ms"] = lat[0] / 1e6
        e.m["latency_median_ms"] = statistics.median(lat) / 1e6
        e.m["latency_p99_ms"] = percentile(lat, 99) / 1e6
        e.m["latency_max_ms"] = lat[-1] / 1e6
        bg = e.m["idle_rate"] * e.scrape_wall_ns
        e.m["bg_share_ms"] = bg / 1e6
        e.m["scrape_cpu_total_ms"] = e.scrape_cpu_ns / 1e6
        e.m["cpu_per_scrape_raw_ms"] = e.scrape_cpu_ns / a.scrapes / 1e6
        e.m["cpu_per_scrape_ms"] = max(0.0, e.scrape_cpu_ns - bg) / a.scrapes / 1e6
        e.m["cpu_per_scrape_stat_ms"] = e.scrape_ticks / CLK_TCK * 1e3 / a.scrapes
        # 4. memory after the scrapes
        e.m["rss_mb"] = e.status_kb("VmRSS") * 1024 / 1e6

    # The floor: the same loop for a tiny response that touches no metrics
    # (agent /-/healthy, node_exporter's landing page): the cost of a
    # connection and an HTTP exchange alone, client included.
    floor_n = max(100, a.scrapes // 2)
    log(f"{floor_n} tiny requests each (the per-connection floor)")
    floor: dict[str, list[int]] = {e.name: [0, 0] for e in both}
    lats: dict[str, list[int]] = {e.name: [] for e in both}
    for i in range(BLOCKS):
        for e in (both if i % 2 == 0 else both[::-1]):
            c, w = e.cpu_ns(), time.monotonic_ns()
            for _ in range(floor_n // BLOCKS):
                lats[e.name].append(e.scrape(e.floor_request)[0])
            floor[e.name][0] += e.cpu_ns() - c
            floor[e.name][1] += time.monotonic_ns() - w
    for e in both:
        n = floor_n // BLOCKS * BLOCKS
        cpu, wall = floor[e.name]
        e.m["floor_median_ms"] = statistics.median(lats[e.name]) / 1e6
        e.m["floor_cpu_ms"] = max(0.0, cpu - e.m["idle_rate"] * wall) / n / 1e6

    # 5. throughput
    for e in both:
        log(f"wrk against {e.name}, {a.wrk_duration} s")
        e.alive()
        run_wrk(e, a.wrk_duration, a.request)
        time.sleep(1)
    for e in both:
        e.m["hwm_mb"] = e.status_kb("VmHWM") * 1024 / 1e6

    text = report(a, facts, agent, ne, started, load0, loadavg())
    print(text)
    if a.write_docs:
        write_docs(a.write_docs, text)


if __name__ == "__main__":
    main()
