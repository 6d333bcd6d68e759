"""Prometheus for the embedded stack, when the machine has the binary (Debian's package).

It scrapes the three services like docker-compose's Prometheus does (one job per service,
``deploy/prometheus/prometheus.yml``) and loads the same alert rules
(``deploy/prometheus/alerts.yml``), so dashboards and rules behave the same on both.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import yaml

from shared.devstack.stack import REPO_ROOT, SERVICES, StackConfig, StackError, _wait_port

RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"


def binary() -> str | None:
    return shutil.which("prometheus")


def write_config(cfg: StackConfig, *, scrape_interval: str = "2s") -> Path:
    config: dict[str, object] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": name,
                "static_configs": [{"targets": [f"127.0.0.1:{cfg.ports.service(name)}"]}],
            }
            for name in SERVICES
        ],
    }
    if RULES.exists():
        config["rule_files"] = [str(RULES)]
    path = cfg.data_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def url(cfg: StackConfig) -> str:
    return f"http://127.0.0.1:{cfg.ports.prometheus}"


def start(cfg: StackConfig, *, scrape_interval: str = "2s") -> int | None:
    """Start Prometheus scraping the stack; its pid, or None without the binary."""
    exe = binary()
    if exe is None:
        return None
    data = cfg.data_dir / "prometheus-data"
    # A fresh stack starts with empty databases; its metrics start empty too.
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    config = write_config(cfg, scrape_interval=scrape_interval)
    logs = cfg.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "prometheus.log", "ab") as log:
        proc = subprocess.Popen(
            [
                exe,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address=127.0.0.1:{cfg.ports.prometheus}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _wait_port(cfg.ports.prometheus, "prometheus")
    _wait_ready(cfg)
    return proc.pid


def _wait_ready(cfg: StackConfig, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url(cfg)}/-/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise StackError(f"prometheus not ready within {timeout:.0f}s (logs in {cfg.data_dir})")
