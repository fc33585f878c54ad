"""Locations are shown in errors, logs, reprs and audit events only through ``redact``: it must never raise
(a bad port or an IPv6 host must not turn an error message into an internal error) and never show user info."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from strongroom.backends.registry import redact

secret = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1).map(lambda s: f"SECRET{s}")
hosts = st.sampled_from(["127.0.0.1:9000", "[::1]:9000", "s3.example.com", "bucket", "host:99999", "h:1 "])


@given(st.sampled_from(["http", "https", "s3"]), st.text(max_size=8), secret, hosts, st.text(max_size=20))
def test_redact_never_raises_and_never_shows_user_info(
    scheme: str, user: str, password: str, host: str, path: str
) -> None:
    path = path.replace("SECRET", "")
    url = f"{scheme}://{user}:{password}@{host}/{path}"
    shown = redact(url)
    assert "SECRET" not in shown
    assert shown.startswith(f"{scheme}://")


def test_redact_keeps_what_it_can() -> None:
    assert redact("http://[::1]:9000/x?token=abc") == "http://[::1]:9000/x"
    assert redact("s3://bkt/prefix") == "s3://bkt/prefix"
    assert redact("/local/folder") == "/local/folder"
    assert "pw" not in redact("KEY:pw@host")
