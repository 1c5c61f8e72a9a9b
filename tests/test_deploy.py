"""compose.yaml and the Dockerfile, checked against the broker they deploy.

Docker does not run on the CI machines, so these read the files: every STRATA_*
variable they set must be a setting the broker knows and accepts (an unknown one would
be ignored silently), the image must contain every package the project installs, and
the bucket and credentials must agree between MinIO's side and the broker's. The same
settings are exercised for real by the s3stream tests against moto.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

import yaml

from broker.config import ENV_PREFIX, BrokerConfig, load

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {ENV_PREFIX + name.upper() for name in BrokerConfig.__dataclass_fields__}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _dockerfile_env() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def _broker_env() -> dict[str, str]:
    """What the broker container sees: the image's ENV, then compose's environment."""
    service = _compose()["services"]["strata"]
    return {**_dockerfile_env(), **{k: str(v) for k, v in service["environment"].items()}}


def test_every_strata_variable_is_a_setting_the_broker_accepts() -> None:
    env = _broker_env()
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in SETTINGS)
    assert not unknown, f"not broker settings: {unknown}"
    config = load(argparse.Namespace(), environ=env)
    assert config.object_store == "s3://strata/cluster-1"
    assert config.s3_endpoint == "http://minio:9000"
    assert config.listen == "0.0.0.0:9092"
    assert config.advertised == ("localhost", 9092)


def test_minio_and_the_broker_agree_on_bucket_and_credentials() -> None:
    services = _compose()["services"]
    minio = services["minio"]["environment"]
    env = _broker_env()
    assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    bucket = env["STRATA_OBJECT_STORE"].removeprefix("s3://").split("/")[0]
    create = " ".join(services["create-bucket"]["entrypoint"])
    assert f"local/{bucket}" in create
    assert f"{minio['MINIO_ROOT_USER']} {minio['MINIO_ROOT_PASSWORD']}" in create


def test_the_image_holds_every_package_the_project_installs() -> None:
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]
    copied = set(re.findall(r"^COPY (\S+) ", (ROOT / "Dockerfile").read_text(), re.M))
    missing = sorted({p.split(".")[0] for p in packages} - copied)
    assert not missing, f"the Dockerfile does not copy {missing}"
    ports = _compose()["services"]["strata"]["ports"]
    assert "9092:9092" in ports and "9100:9100" in ports
