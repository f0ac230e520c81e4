"""Per-bot plugin config (validation, secret fields) and the cipher that keeps secrets at rest."""

from __future__ import annotations

import base64
import contextlib
import stat
import threading
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import pytest
from cryptography.fernet import Fernet

from botloom.core.config import (
    MASK,
    ConfigError,
    Secret,
    mask_secrets,
    secret_fields,
    split_secrets,
    validate_config,
)
from botloom.core.crypto import Cipher, InvalidToken, key_from_setting, load_cipher

# --------------------------------------------------------------------------- config


class TwilioConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    account_sid: Annotated[str, msgspec.Meta(pattern=r"^AC\w+$")]
    auth_token: Secret
    reply_mode: Literal["twiml", "rest"] = "twiml"
    retries: Annotated[int, msgspec.Meta(ge=0, le=5)] = 2
    fallback_token: Secret | None = None


class RangeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    low: int = 0
    high: int = 10

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low must not exceed high")


class LenientConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A plugin author's schema that does not forbid unknown fields."""

    greeting: str = "hello"


GOOD = {"account_sid": "AC123", "auth_token": "tok-s3cret"}


def errors_of(schema: type[msgspec.Struct] | None, data: Any) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        validate_config("twilio", schema, data)
    assert caught.value.plugin == "twilio"
    for error in caught.value.errors:
        assert error["field"] in str(caught.value)
    return {e["field"]: e["message"] for e in caught.value.errors}


def test_a_valid_config_is_normalised_with_defaults() -> None:
    assert validate_config("twilio", TwilioConfig, {**GOOD, "retries": "3"}) == {
        **GOOD,
        "reply_mode": "twiml",
        "retries": 3,
        "fallback_token": None,
    }


def test_every_bad_field_is_named() -> None:
    errors = errors_of(TwilioConfig, {"account_sid": "XX1", "reply_mode": "fax", "retries": 9, "colour": "red"})
    assert set(errors) == {"account_sid", "auth_token", "reply_mode", "retries", "colour"}
    assert errors["auth_token"] == "is required"
    assert errors["colour"] == "unknown field"
    assert "fax" in errors["reply_mode"]
    assert "<= 5" in errors["retries"]
    assert "AC" in errors["account_sid"]


def test_a_wrong_type_is_named() -> None:
    assert set(errors_of(TwilioConfig, {**GOOD, "retries": "many"})) == {"retries"}


def test_a_cross_field_check_is_reported_against_the_config() -> None:
    errors = errors_of(RangeConfig, {"low": 5, "high": 1})
    assert list(errors) == ["config"]
    assert "low must not exceed high" in errors["config"]


@pytest.mark.parametrize("data", [[], "text", None, 3])
def test_the_config_must_be_an_object(data: Any) -> None:
    assert list(errors_of(TwilioConfig, data)) == ["config"]


def test_a_plugin_without_schema_takes_only_an_empty_config() -> None:
    assert validate_config("plain", None, {}) == {}
    assert set(errors_of(None, {"a": 1, "b": 2})) == {"a", "b"}


def test_an_unknown_field_is_named_even_when_the_schema_does_not_forbid_it() -> None:
    """A typo ("greting") must not be accepted and silently dropped."""
    assert set(errors_of(LenientConfig, {"greting": "hi"})) == {"greting"}


def test_secret_fields_are_found_through_optional_annotations() -> None:
    assert secret_fields(TwilioConfig) == {"auth_token", "fallback_token"}
    assert secret_fields(RangeConfig) == frozenset()
    assert secret_fields(None) == frozenset()


def test_secrets_are_masked_and_split() -> None:
    config = validate_config("twilio", TwilioConfig, {**GOOD, "fallback_token": ""})
    masked = mask_secrets(TwilioConfig, config)
    assert masked["auth_token"] == MASK
    assert masked["fallback_token"] == ""  # nothing to hide
    assert masked["account_sid"] == "AC123"
    public, hidden = split_secrets(TwilioConfig, config)
    assert hidden == {"auth_token": "tok-s3cret", "fallback_token": ""}
    assert public == {"account_sid": "AC123", "reply_mode": "twiml", "retries": 2}
    assert "s3cret" not in repr(masked) + repr(public)


# --------------------------------------------------------------------------- crypto


def round_trips(encrypting: Cipher, decrypting: Cipher) -> bool:
    try:
        return bool(decrypting.decrypt(encrypting.encrypt(b"payload")) == b"payload")
    except InvalidToken:
        return False


def test_a_fernet_key_setting_is_used_as_it_is() -> None:
    key = Fernet.generate_key()
    assert key_from_setting(key.decode()) == key
    assert round_trips(Cipher(key), Cipher(key_from_setting(key.decode())))


def test_a_passphrase_is_stretched_into_a_stable_key() -> None:
    key = key_from_setting("correct horse battery staple")
    assert len(base64.urlsafe_b64decode(key)) == 32
    assert key == key_from_setting("correct horse battery staple")
    assert key != key_from_setting("correct horse battery stapler")
    assert round_trips(load_cipher("correct horse battery staple", Path("/nonexistent")), Cipher(key))
    assert not round_trips(Cipher(key), Cipher(key_from_setting("another passphrase")))


def test_without_a_setting_a_key_file_is_generated_once_and_reused(tmp_path: Path, data_dir: Path) -> None:
    directory = data_dir / "nested"
    first = load_cipher(None, directory)
    key_file = directory / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_bytes()
    second = load_cipher(None, directory)
    assert key_file.read_bytes() == key
    assert round_trips(first, second)
    assert not round_trips(first, load_cipher(None, tmp_path / "elsewhere"))


def test_a_tampered_token_is_refused() -> None:
    cipher = Cipher(Fernet.generate_key())
    token = bytearray(base64.urlsafe_b64decode(cipher.encrypt(b"s3cret")))
    token[-40] ^= 1
    with pytest.raises(InvalidToken):
        cipher.decrypt(base64.urlsafe_b64encode(bytes(token)))
    with pytest.raises(InvalidToken):
        Cipher(Fernet.generate_key()).decrypt(cipher.encrypt(b"s3cret"))


def test_two_processes_generating_the_key_at_once_share_one(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both see no key file (two workers starting together); both must end with the same key.

    The interleaving is forced: each caller waits for the other after checking whether
    the file exists, as two processes starting at once can.
    """
    key_file = data_dir / "secret.key"
    checked = threading.Barrier(2, timeout=2)
    original_exists = Path.exists

    def exists(self: Path, *args: Any, **kwargs: Any) -> bool:
        result = original_exists(self, *args, **kwargs)
        if self == key_file and threading.current_thread().name.startswith("starter"):
            with contextlib.suppress(threading.BrokenBarrierError):  # a locking implementation never meets
                checked.wait()
        return result

    monkeypatch.setattr(Path, "exists", exists)
    ciphers: dict[str, Cipher] = {}
    errors: list[BaseException] = []

    def start(name: str) -> None:
        try:
            ciphers[name] = load_cipher(None, data_dir)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(f"starter-{i}",), name=f"starter-{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert errors == []
    assert round_trips(ciphers["starter-0"], ciphers["starter-1"])
