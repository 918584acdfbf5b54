"""Settings: sample secrets and short JWT secrets are refused outside dev mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelserve.shared.settings import SettingsError, load_settings

GOOD = "s" * 40


def test_defaults_in_local_mode(tmp_path: Path) -> None:
    settings = load_settings(jwt_secret=GOOD, data_dir=tmp_path)
    assert settings.mode == "local"
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path}/modelserve.db"
    assert settings.resolved_store_dir == tmp_path / "objects"


@pytest.mark.parametrize(
    ("overrides", "env"),
    [
        (
            {"jwt_secret": "your-super-secret-jwt-key-change-in-production-minimum-32-chars"},
            "MODELSERVE_JWT_SECRET",
        ),
        ({"jwt_secret": GOOD, "minio_secret_key": "minioadmin123"}, "MODELSERVE_MINIO_SECRET_KEY"),
        ({"jwt_secret": GOOD, "admin_password": "admin-password"}, "MODELSERVE_ADMIN_PASSWORD"),
        ({"jwt_secret": GOOD, "admin_password": " Admin-Password "}, "MODELSERVE_ADMIN_PASSWORD"),
    ],
)
def test_sample_secrets_are_refused_outside_dev(overrides: dict[str, str], env: str) -> None:
    with pytest.raises(SettingsError, match="published sample secret") as refused:
        load_settings(**overrides)
    assert refused.value.env == env
    assert str(refused.value).startswith(env)


def test_sample_secrets_are_allowed_in_dev_mode() -> None:
    settings = load_settings(dev=True, jwt_secret="minioadmin123", minio_secret_key="minioadmin123")
    assert settings.dev


def test_short_and_missing_jwt_secrets() -> None:
    with pytest.raises(SettingsError, match="is 10 bytes; at least 32") as short:
        load_settings(jwt_secret="0123456789")
    assert short.value.env == "MODELSERVE_JWT_SECRET"
    with pytest.raises(SettingsError, match="required with HS256"):
        load_settings()


def test_asymmetric_algorithms_need_a_public_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="RS256 needs a public key") as missing:
        load_settings(jwt_algorithm="RS256")
    assert missing.value.env == "MODELSERVE_JWT_PUBLIC_KEY_FILE"
    key = tmp_path / "pub.pem"
    key.write_text("-----BEGIN PUBLIC KEY-----\n")
    assert load_settings(jwt_algorithm="RS256", jwt_public_key_file=key).jwt_algorithm == "RS256"


def test_environment_is_read_at_the_edge(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELSERVE_JWT_SECRET", GOOD)
    monkeypatch.setenv("MODELSERVE_MODE", "kubernetes")
    monkeypatch.setenv("MODELSERVE_DATA_DIR", str(tmp_path))
    settings = load_settings()
    assert (settings.mode, settings.data_dir) == ("kubernetes", tmp_path)
    monkeypatch.setenv("MODELSERVE_MODE", "cloud")
    with pytest.raises(SettingsError) as bad:
        load_settings()
    assert bad.value.env == "MODELSERVE_MODE"
    assert "'local' or 'kubernetes'" in str(bad.value)


def test_secrets_are_not_printed() -> None:
    settings = load_settings(jwt_secret=GOOD)
    assert GOOD not in repr(settings)


def test_readme_documents_every_setting() -> None:
    from modelserve.runtime.config import RuntimeConfig
    from modelserve.shared.logs import LogSettings
    from modelserve.shared.settings import Settings

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"`MODELSERVE_{name.upper()}`" in readme, name
    for name in RuntimeConfig.model_fields:
        assert f"`MODELSERVE_RUNTIME_{name.upper()}`" in readme, name
    for name in LogSettings.model_fields:
        assert f"`MODELSERVE_LOG_{name.upper()}`" in readme, name


@pytest.mark.parametrize(
    ("given", "used"),
    [("Serverless", "Serverless"), ("Standard", "Standard"), ("RawDeployment", "Standard")],
)
def test_kserve_deployment_mode_uses_kserve_0_16s_names(given: str, used: str) -> None:
    # A "RawDeployment" annotation makes KServe 0.16's webhook refuse every update.
    assert (
        load_settings(jwt_secret=GOOD, kserve_deployment_mode=given).kserve_deployment_mode == used
    )
