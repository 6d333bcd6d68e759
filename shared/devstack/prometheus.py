"""Prometheus for the embedded stack, when the machine has the binary (Debian's package)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from shared.devstack.stack import REPO_ROOT, SERVICES, StackConfig, _wait_port

RULES = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"


def binary() -> str | None:
    return shutil.which("prometheus")


def write_config(cfg: StackConfig) -> Path:
    targets = ", ".join(f"'127.0.0.1:{cfg.ports.service(n)}'" for n in SERVICES)
    rules = f"rule_files: ['{RULES}']\n" if RULES.exists() else ""
    text = (
        "global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\n"
        f"{rules}"
        "scrape_configs:\n"
        "  - job_name: claimflow\n"
        f"    static_configs:\n      - targets: [{targets}]\n"
    )
    path = cfg.data_dir / "prometheus.yml"
    path.write_text(text)
    return path


def start(cfg: StackConfig) -> int | None:
    exe = binary()
    if exe is None:
        return None
    data = cfg.data_dir / "prometheus-data"
    data.mkdir(parents=True, exist_ok=True)
    config = write_config(cfg)
    with open(cfg.data_dir / "logs" / "prometheus.log", "ab") as log:
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
    return proc.pid
