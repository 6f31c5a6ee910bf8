"""URI passwords are masked in any text or config, and nothing else is changed."""

from __future__ import annotations

import pytest

from pipeline.tracking.redact import redact, redact_tree


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://user:secret@host:5000", "http://user:***@host:5000"),
        ("https://user:secret@host/path?x=1", "https://user:***@host/path?x=1"),
        ("postgresql+psycopg://mlflow:s3cr%40t@db:5432/mlflow", "postgresql+psycopg://mlflow:***@db:5432/mlflow"),
        ("postgresql://u:p@ss@db/mlflow", "postgresql://u:***@db/mlflow"),  # an unescaped @ in the password
        ("tracking.uri=http://u:pw@127.0.0.1:5000", "tracking.uri=http://u:***@127.0.0.1:5000"),
        ("tracking.uri='http://u:pw@h' window=2", "tracking.uri='http://u:***@h' window=2"),
        (
            "postgresql://db/mlflow?user=u&password=secret&sslmode=require",
            "postgresql://db/mlflow?user=u&password=***&sslmode=require",
        ),
        ("a http://a:b@h and postgresql://c:d@e/f", "a http://a:***@h and postgresql://c:***@e/f"),
        # a job's overrides as Hydra's sweepers write them: ':' (and ',' '=' ...) escaped
        ("tracking.uri=http\\://admin\\:pw@127.0.0.1\\:5000", "tracking.uri=http\\://admin\\:***@127.0.0.1\\:5000"),
        (
            "tracking.uri=postgresql+psycopg\\://u\\:a\\,b\\=c@db/x",
            "tracking.uri=postgresql+psycopg\\://u\\:***@db/x",
        ),
        ("tracking.uri=postgresql\\://db/x?password\\=secret", "tracking.uri=postgresql\\://db/x?password\\=***"),
        # nothing to mask: no password, or no URI
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://user@host:5000", "http://user@host:5000"),
        ("sqlite:////tmp/outputs/mlflow.db", "sqlite:////tmp/outputs/mlflow.db"),
        ("sqlite:///outputs/mlflow.db", "sqlite:///outputs/mlflow.db"),
        ("window=1,2,3 layer=features.3", "window=1,2,3 layer=features.3"),
        ("user:secret@host", "user:secret@host"),  # not a URI: no scheme
        ("", ""),
    ],
)
def test_redact_masks_only_the_password(text, expected):
    assert redact(text) == expected


def test_redact_tree_masks_every_string_and_keeps_the_rest():
    config = {
        "window": 3,
        "progress": None,
        "tracking": {"uri": "http://u:secret@h:5000", "experiment": "e"},
        "model": {"input_size": [1, 28, 28], "kwargs": {"note": "postgresql://a:secret@b/c"}},
    }
    redacted = redact_tree(config)
    assert redacted == {
        "window": 3,
        "progress": None,
        "tracking": {"uri": "http://u:***@h:5000", "experiment": "e"},
        "model": {"input_size": [1, 28, 28], "kwargs": {"note": "postgresql://a:***@b/c"}},
    }
    assert config["tracking"]["uri"] == "http://u:secret@h:5000"  # a copy: the input is unchanged
