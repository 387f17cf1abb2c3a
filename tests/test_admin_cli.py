"""What admins coming from SpamAssassin, Rspamd and amavis expect (issue 10): the command line,
the config loader's errors, overlays of the allow/block lists, explanations they can tune
from, and the replay report's figures. Each test names the defect number it covers.

Most cases run `brandgate` in-process (gateway.cli.main) for speed; a few run it as a
subprocess where the exit path itself (a traceback, a signal) is what is tested.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from config.loader import ConfigError, load_config
from filters.sniff import not_mail
from gateway.archives import replay
from gateway.archives.read import estimate_messages
from gateway.archives.report import ordinal, render
from gateway.cli.main import JsonFormatter
from gateway.cli.main import main as cli
from tests.test_replay import run_fake, write_msg

GOLDEN = Path(__file__).parent / "golden"
PHISH = GOLDEN / "amazon_gift_freemail.eml"
ROOT = Path(__file__).resolve().parent.parent


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def mbox(tmp_path: Path) -> Path:
    box = tmp_path / "box.mbox"
    parts = []
    for i, path in enumerate([PHISH, GOLDEN / "friend_link.eml"]):
        body = path.read_bytes().replace(b"\r\n", b"\n")
        parts.append(f"From sender{i}@example.org Thu Aug  1 10:00:00 2024\n".encode() + body)
    box.write_bytes(b"\n".join(parts))
    return box


# --------------------------------------------------------------------------- config errors


def bad_config(tmp_path: Path) -> Path:
    (tmp_path / "brandgate.toml").write_text(
        '[engine]\nverify_dkm = true\n[thresholds]\ntag = "high"\nquarantine = 8\nreject = 12\n'
        '[rules]\nLURE_REWARD = { weight = 2.0, group = "lures" }\n'
        '[gateway]\nlisten = "nowhere"\nmode = "after-queu"\n'
    )
    (tmp_path / "lists.toml").write_text('freemial = ["x.example"]\n')
    return tmp_path


def test_every_config_error_at_once_with_suggestions_defect_7(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        from gateway.settings import check_gateway

        load_config(bad_config(tmp_path), extra=[check_gateway])
    text = [str(e) for e in err.value.errors]
    main = str(tmp_path / "brandgate.toml")
    assert f'{main}: engine.verify_dkm: unknown key; did you mean "verify_dkim"?' in text[0]
    assert f'{main}: thresholds.tag: expected a number, got "high"' in text
    assert f'{main}: rules.LURE_REWARD.group: unknown group "lures"; did you mean "lure"?' in text
    assert any('lists.toml: freemial: unknown key; did you mean "freemail"?' in t for t in text)
    assert any(t.startswith(f"{main}: gateway.listen: expected") for t in text)
    assert any('gateway.mode: expected one of after-queue, before-queue, got "after-queu"; '
               'did you mean "after-queue"?' in t for t in text)  # fmt: skip
    # no Python reprs, and the [gateway] path once per line (it was printed twice)
    assert all(t.count(str(tmp_path)) == 1 for t in text), text
    assert not any("'" in t.split(": ", 2)[2] for t in text if "did you mean" not in t)


def test_check_config_prints_them_all_in_one_style_defect_7(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "check-config", "--config", str(bad_config(tmp_path)))
    lines = err.splitlines()
    assert code == 2 and out == ""
    assert all(ln.startswith("brandgate check-config: ") for ln in lines)
    assert lines[-1] == f"brandgate check-config: {len(lines) - 1} configuration errors"
    assert len(lines) - 1 >= 6


def test_rules_with_a_bad_config_is_a_clean_error_not_a_traceback_defect_5(
    tmp_path: Path,
) -> None:
    (tmp_path / "brandgate.toml").write_text("[thresholds]\ntag = 'x'\n")
    res = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "rules", "--config", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("brandgate rules: error: ")
    assert 'thresholds.tag: expected a number, got "x"' in res.stderr


def test_one_error_prefix_for_every_command_defect_5(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two errors: each on its own line with the prefix (milter printed the later ones bare).
    # serve and milter fail at config load, before they listen on anything.
    (tmp_path / "brandgate.toml").write_text("[thresholds]\ntag = 'x'\nreject = 'y'\n")
    cfg = str(tmp_path)
    for argv in (
        ["scan", str(PHISH), "--config", cfg],
        ["explain", str(PHISH), "--config", cfg],
        ["replay", str(PHISH), "--labels", "folders", "--config", cfg],
        ["filter", str(PHISH), "--config", cfg],
        ["quarantine", "list", "--config", cfg],
        ["rules", "--config", cfg],
        ["check-config", "--config", cfg],
        ["serve", "--config", cfg, "--listen", "127.0.0.1:0", "--metrics", ""],
        ["milter", "--config", cfg, "--listen", "inet:127.0.0.1:0", "--metrics", ""],
        ["tune", str(PHISH), "--labels", "folders", "--config", cfg, "--no-progress"],
    ):
        code, out, err = run(capsys, *argv)
        prefix = f"brandgate {argv[0]}: "
        lines = err.splitlines()
        assert code == 2 and out == "", (argv, out, err)
        assert len(lines) == 3 and all(ln.startswith(prefix) for ln in lines), err
        where = f"{prefix}error: {tmp_path / 'brandgate.toml'}: thresholds."
        assert all(line.startswith(where) for line in lines[:2]), err
        assert 'thresholds.tag: expected a number, got "x"' in lines[0]
        assert lines[2] == f"{prefix}2 configuration errors"


def test_gateway_and_engine_errors_come_out_together_for_both_live_doors_defect_7(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One run lists a [thresholds] error, a [gateway] error and a [gateway.milter] one.
    (tmp_path / "brandgate.toml").write_text(
        "[thresholds]\ntag = 'x'\n[gateway]\nmode = 'after-queu'\n"
        "[gateway.milter]\nquarantine = 'spam-folder'\n"
    )
    for argv in (
        ["serve", "--config", str(tmp_path), "--listen", "127.0.0.1:0", "--metrics", ""],
        ["milter", "--config", str(tmp_path), "--listen", "inet:127.0.0.1:0", "--metrics", ""],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2, err
        assert "thresholds.tag" in err and "gateway.mode" in err, err
        assert "gateway.milter.quarantine" in err, err
        assert err.splitlines()[-1] == f"brandgate {argv[0]}: 3 configuration errors", err


def test_check_config_lists_every_file_and_what_each_changed_defect_7(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = load_config(None).thresholds
    quarantine = shipped["quarantine"]
    (tmp_path / "brandgate.toml").write_text(
        f"[thresholds]\ntag = 5.0\nquarantine = {quarantine}\n"
    )
    (tmp_path / "lists.toml").write_text(
        'freemail = ["mail.example"]\nremove_shorteners = ["bit.ly", "never-there.example"]\n'
    )
    (tmp_path / "allow_block.toml").write_text('[block]\ndomains = ["spam-house.example"]\n')
    code, out, err = run(capsys, "check-config", "--config", str(tmp_path))
    assert code == 0, err
    for name in ("brandgate.toml", "lists.toml", "lures.toml", "allow_block.toml"):
        assert str(tmp_path / name) in out or name == "lures.toml"
    assert "config/brands/retail.toml" in out and "config/lures.toml" in out
    assert f"thresholds.tag = 5.0 (was {shipped['tag']:.1f})" in out
    assert "thresholds.quarantine" not in out  # set to what it was: no change
    assert "freemail: added 1 (mail.example)" in out
    assert "shorteners: removed 1 (bit.ly)" in out
    assert "shorteners: not there to remove: never-there.example" in out
    assert "block.domains: added 1 (spam-house.example)" in out
    assert "{" not in out and "'" not in out  # no Python reprs
    assert "tagging: " in out and "headers only (DKIM signatures stay valid)" in out
    assert "passed mail:" in out and "header fields prepended, the rest as it came" in out


def test_check_config_shows_the_values_a_brand_overlay_changed_defect_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = load_config(None).registry.brands["amazon"]
    dropped = shipped.names[-1]
    kept = shipped.sender_domains[0]
    (tmp_path / "brands").mkdir()
    overlay = tmp_path / "brands" / "local.toml"
    overlay.write_text(
        f'[brands.amazon]\nsender_domains = ["amazon-mail.example", "{kept}"]\n'
        f'remove_names = ["{dropped}", "Never There"]\ncategory = "shop"\n'
        '[brands.acme]\nname = "Acme"\nsource = "test"\nsender_domains = ["acme.example"]\n'
    )
    code, out, err = run(capsys, "check-config", "--config", str(tmp_path))
    assert code == 0, err
    changes = out[out.index("changes over the shipped configuration:") :]
    block = changes[changes.index(f"{overlay}:") :].splitlines()[1:3]
    assert [ln.strip() for ln in block] == [
        "brands added: acme",
        f"brands.amazon: sender_domains added 1 (amazon-mail.example); names removed 1 "
        f'({dropped}); names not there to remove: Never There; category = "shop" '
        f'(was "{shipped.category}")',
    ]
    amazon = load_config(tmp_path).registry.brands["amazon"]
    assert kept in amazon.sender_domains and dropped not in amazon.names


# --------------------------------------------------------------------------- STARTTLS config


def _certificate(folder: Path, name: str, *passphrase: str) -> tuple[Path, Path]:
    """A self-signed test certificate and its key (EC: quick to make)."""
    cert, key = folder / f"{name}.crt", folder / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-days", "2", "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
         *(["-passout", f"pass:{passphrase[0]}"] if passphrase else ["-nodes"])],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates (scripts/system-deps)")
    folder = tmp_path_factory.mktemp("tls")
    a_cert, a_key = _certificate(folder, "a")
    _b_cert, b_key = _certificate(folder, "b")
    enc_cert, enc_key = _certificate(folder, "enc", "secret")
    garbage = folder / "garbage.crt"
    garbage.write_text("not a certificate\n")
    return {"cert": a_cert, "key": a_key, "other_key": b_key, "garbage": garbage,
            "enc_cert": enc_cert, "enc_key": enc_key, "missing": folder / "none.crt"}  # fmt: skip


@pytest.mark.parametrize(
    ("cert", "key", "blamed", "says"),
    [
        ("cert", None, "gateway.tls_cert", "set without tls_key: STARTTLS needs both"),
        (None, "key", "gateway.tls_key", "set without tls_cert: STARTTLS needs both"),
        ("missing", "key", "gateway.tls_cert", "no such file: {missing}"),
        ("cert", "missing", "gateway.tls_key", "no such file: {missing}"),
        ("garbage", "key", "gateway.tls_cert", "no PEM certificate in {garbage}"),
        ("key", "key", "gateway.tls_cert", "no PEM certificate in {key}"),
        ("cert", "garbage", "gateway.tls_key",
         "no PEM private key without a passphrase in {garbage}"),
        ("cert", "other_key", "gateway.tls_key",
         "{other_key} is not the private key of the certificate in {cert}"),
        ("enc_cert", "enc_key", "gateway.tls_key",
         "{enc_key} is protected by a passphrase: give the key without one"),
    ],
)  # fmt: skip
def test_starttls_certificate_errors_name_the_file_and_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    certificates: dict[str, Path],
    cert: str | None,
    key: str | None,
    blamed: str,
    says: str,
) -> None:
    lines = ["[gateway]"]
    lines += [f'tls_cert = "{certificates[cert]}"'] if cert else []
    lines += [f'tls_key = "{certificates[key]}"'] if key else []
    (tmp_path / "brandgate.toml").write_text("\n".join(lines) + "\n")
    # stdin closed: an encrypted key must be an error, never a passphrase prompt
    code, out, err = run(capsys, "check-config", "--config", str(tmp_path))
    expected = says.format(**{k: str(v) for k, v in certificates.items()})
    assert code == 2 and out == ""
    assert (
        err
        == f"brandgate check-config: error: {tmp_path / 'brandgate.toml'}: {blamed}: {expected}\n"
    )


def test_starttls_certificate_that_cannot_be_read_is_named(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    certificates: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unreadable = tmp_path / "private.crt"
    unreadable.write_bytes(certificates["cert"].read_bytes())
    unreadable.chmod(0)
    if os.geteuid() == 0:  # root reads anything: refuse the read as the OS would for others
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: real(p, m) and Path(p) != unreadable)
    (tmp_path / "brandgate.toml").write_text(
        f'[gateway]\ntls_cert = "{unreadable}"\ntls_key = "{certificates["key"]}"\n'
        'mode = "after-queu"\n'
    )
    code, _, err = run(capsys, "check-config", "--config", str(tmp_path))
    main = tmp_path / "brandgate.toml"
    assert code == 2
    assert (
        f"brandgate check-config: error: {main}: gateway.tls_cert: not readable: {unreadable}"
        in err
    )
    assert "gateway.mode: " in err  # reported with the other errors, all at once
    # a good pair is accepted
    (tmp_path / "brandgate.toml").write_text(
        f'[gateway]\ntls_cert = "{certificates["cert"]}"\ntls_key = "{certificates["key"]}"\n'
    )
    code, _, err = run(capsys, "check-config", "--config", str(tmp_path))
    assert code == 0, err


# --------------------------------------------------------------------------- allow / block


def test_allow_block_overlay_extends_removes_and_shows_in_explain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = tmp_path / "admin"
    admin.mkdir()
    (admin / "allow_block.toml").write_text(
        '[allow]\naddresses = ["amazon.rewards.team@gmail.com", "keep@partner.example"]\n'
        '[remove_allow]\naddresses = ["keep@partner.example"]\n'
        '[block]\nlink_domains = ["best-deals-outlet.shop"]\n'
    )
    cfg = load_config(admin)
    assert cfg.access.allow.addresses == ("amazon.rewards.team@gmail.com",)
    assert cfg.access.block.link_domains == ("best-deals-outlet.shop",)
    raw = PHISH.read_bytes()
    sender = raw.split(b"From:", 1)[1].split(b"\n", 1)[0]
    assert b"gmail.com" in sender
    code, out, _ = run(capsys, "explain", "--json", "--config", str(admin), str(PHISH))
    assert code == 0
    found = {f["rule"]: f for f in json.loads(out)["findings"]}
    # each entry that matched is a finding, with the entry named in its evidence
    assert "BLOCKLIST_LINK" in found, found.keys()
    assert "listed best-deals-outlet.shop" in found["BLOCKLIST_LINK"]["evidence"][0]


def test_allow_list_entry_lets_a_message_pass_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frm = PHISH.read_bytes().split(b"\nFrom:", 1)[-1].split(b"<", 1)[1].split(b">", 1)[0]
    (tmp_path / "allow_block.toml").write_text(f'[allow]\naddresses = ["{frm.decode()}"]\n')
    code, out, _ = run(capsys, "explain", "--config", str(tmp_path), str(PHISH))
    assert code == 0
    assert "ALLOWLIST_FROM" in out and f"From {frm.decode().lower()} is listed" in out
    assert "factor 1.00 × weight -10.00 = -10.00" in out


def test_allow_block_errors_name_file_and_key(tmp_path: Path) -> None:
    (tmp_path / "allow_block.toml").write_text(
        '[allow]\naddresses = ["not-an-address"]\ndomian = []\n[block]\nlink_domains = ["a b"]\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    text = "\n".join(str(e) for e in err.value.errors)
    assert 'allow.addresses: not an address like user@example.com: "not-an-address"' in text
    assert 'allow.domian: unknown key; did you mean "domains"?' in text
    assert 'block.link_domains: not a domain: "a b"' in text


# --------------------------------------------------------------------------- explain


def test_explain_reads_each_message_of_an_mbox_and_box_n_names_defect_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    box = mbox(tmp_path)
    code, out, _ = run(capsys, "explain", str(box))
    assert code == 0
    assert out.count("Message: ") == 2
    assert f"Message: {box}#1" in out and f"Message: {box}#2" in out
    # the names `scan` prints can be explained one by one
    code, scan_out, _ = run(capsys, "scan", "--format", "jsonl", "-q", str(box))
    sources = [json.loads(ln)["source"] for ln in scan_out.splitlines()]
    assert sources == [f"{box}#1", f"{box}#2"]
    code, out, _ = run(capsys, "explain", sources[1])
    assert code == 0 and out.count("Message: ") == 1 and f"Message: {box}#2" in out
    code, _, err = run(capsys, "explain", f"{box}#9")
    assert code == 1 and "no such file, directory or message" in err


def test_explain_shows_factor_times_weight_and_the_group_cap_defect_10(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "brandgate.toml").write_text("[groups]\nlure = 0.5\nclaim = 1.0\n")
    code, out, _ = run(capsys, "explain", "--config", str(tmp_path), str(PHISH))
    assert code == 0
    lines = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("= factor")]
    assert lines, out
    assert all("× weight" in ln for ln in lines)
    capped = [ln for ln in lines if "over its cap" in ln]
    assert capped and any("group claim over its cap: × " in ln for ln in capped), lines


# --------------------------------------------------------------------------- quarantine


def test_quarantine_with_a_wrong_dir_is_an_error_not_an_empty_store_defect_6(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "typo"
    for action in (["list"], ["show", "x"], ["purge", "--older-than", "1d"]):
        code, out, err = run(capsys, "quarantine", *action, "--quarantine-dir", str(wrong))
        assert code == 1 and out == ""
        assert f"brandgate quarantine: error: no quarantine at {wrong}" in err
    assert not wrong.exists()


def test_quarantine_list_has_a_header_aligned_columns_and_subjects_defect_12(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from filters.types import Verdict
    from gateway.quarantine import QuarantineStore

    store = QuarantineStore(tmp_path / "q").open()
    for i, subject in enumerate(["Your gift card", "=?utf-8?q?Gr=C3=BC=C3=9Fe?="]):
        raw = f"From: a@b.example\r\nSubject: {subject}\r\n\r\nhi\r\n".encode()
        v = Verdict("quarantine", 9.0 + i, None, (), "s")
        store.store(raw, mail_from=f"s{i}@x.example", rcpts=("r@y.example",), mail_options=(),
                    client={}, verdict=v)  # fmt: skip
    code, out, _ = run(capsys, "quarantine", "list", "--quarantine-dir", str(tmp_path / "q"))
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == [
        "id", "time", "state", "verdict", "score", "brand", "from", "to", "subject"
    ]  # fmt: skip
    assert "Your gift card" in lines[1] and "Grüße" in lines[2]
    col = lines[0].index("subject")
    assert lines[1][col:].startswith("Your gift card") and lines[2][col:].startswith("Grüße")
    assert lines[-1] == "2 messages (2 held)"


def test_release_defaults_to_the_invoking_user_and_audit_detail_is_json_defect_12(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.cli import quarantine as cmd_quarantine

    monkeypatch.setenv("SUDO_USER", "carol")
    assert cmd_quarantine.invoking_user() == "carol"
    monkeypatch.delenv("SUDO_USER")
    assert cmd_quarantine.invoking_user()  # the login name
    assert cmd_quarantine._json_or_text('{"next_hop": "h:1"}') == {"next_hop": "h:1"}
    assert cmd_quarantine._json_or_text("free text") == "free text"


def _quarantine_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`brandgate quarantine ...` as an admin runs it: its own process, its own environment."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "quarantine", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )  # fmt: skip


def test_release_without_by_records_the_invoking_user_and_show_prints_detail_as_json_defect_12(
    tmp_path: Path,
) -> None:
    from filters.types import Verdict
    from gateway.quarantine import QuarantineStore
    from tests.rawsink import raw_sink
    from tests.test_gateway_support import config_dir

    cfg = config_dir(tmp_path, engine="verify_dkim = false")  # no DNS from a test
    qdir = tmp_path / "q"
    store = QuarantineStore(qdir).open()
    held = Verdict("quarantine", 9.0, None, (), "held for the test")
    raw = b"From: a@sender.example\r\nSubject: hi\r\n\r\nhello\r\n"
    ids = [
        store.store(
            raw, mail_from="a@sender.example", rcpts=r, mail_options=(), client={}, verdict=held
        )
        for r in (("bob@rcpt.example",), ("bob@rcpt.example", "eve@rcpt.example"))
    ]
    common = ["--config", str(cfg), "--quarantine-dir", str(qdir)]
    base = {k: v for k, v in os.environ.items() if k not in ("SUDO_USER", "LOGNAME", "USER")}
    users = [
        {**base, "SUDO_USER": "carol", "LOGNAME": "root", "USER": "root"},  # sudo: who asked
        {**base, "LOGNAME": "dave", "USER": "dave"},  # no sudo: the login name
    ]
    with raw_sink() as hop:
        hop_at = f"127.0.0.1:{hop.port}"
        released = [
            _quarantine_cli(env, "release", qid, "--reason", "why", "--next-hop", hop_at, *common)
            for qid, env in zip(ids, users, strict=True)
        ]
    assert [r.returncode for r in released] == [0, 0], [r.stderr for r in released]
    assert len(hop.messages) == 2
    assert b"X-Brandgate-Released: " + ids[0].encode() + b" by carol" in hop.messages[0].data
    assert released[0].stdout.rstrip().endswith("for 1 recipient")
    assert released[1].stdout.rstrip().endswith("for 2 recipients")
    for qid, who in zip(ids, ("carol", "dave"), strict=True):
        shown = _quarantine_cli(base, "show", qid, *common)
        assert shown.returncode == 0, shown.stderr
        audit = json.loads(shown.stdout)["audit"]
        assert [(a["action"], a["by"], a["reason"]) for a in audit] == [("release", who, "why")]
        detail = audit[0]["detail"]
        # an object, not JSON inside a string
        assert isinstance(detail, dict), detail
        assert detail["next_hop"] == f"127.0.0.1:{hop.port}"
        assert detail["reply"].startswith("250") and detail["rescan"]["verdict"]


def test_quarantine_output_is_singular_for_one_message_defect_12(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from filters.types import Verdict
    from gateway.quarantine import QuarantineStore

    qdir = tmp_path / "q"
    store = QuarantineStore(qdir).open()
    held = Verdict("quarantine", 9.0, None, (), "s")
    store.store(b"Subject: one\r\n\r\nhi\r\n", mail_from="a@x.example", rcpts=("r@y.example",),
                mail_options=(), client={}, verdict=held)  # fmt: skip
    code, out, _ = run(capsys, "quarantine", "list", "--quarantine-dir", str(qdir))
    assert code == 0 and out.splitlines()[-1] == "1 message (1 held)"
    args = ("quarantine", "purge", "--older-than", "0s", "--by", "t", "--quarantine-dir", str(qdir))
    code, out, _ = run(capsys, *args)
    assert code == 0 and out == "purged 1 message\n"
    code, out, _ = run(capsys, *args)
    assert code == 0 and out == "purged 0 messages\n"


# --------------------------------------------------------------------------- scan, filter


def test_non_mail_files_are_not_scanned_as_mail_defect_9(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    (folder / "random.bin").write_bytes(bytes([0, 1, 2, 250]) * 64)
    (folder / "empty.eml").write_bytes(b"")
    (folder / "README.md").write_text("# Offers\n\nGet cash back on every gift card!\n")
    (folder / "real.eml").write_bytes(PHISH.read_bytes())
    code, out, _ = run(capsys, "scan", "--format", "jsonl", "-q", str(folder))
    records = {Path(r["source"]).name: r for r in map(json.loads, out.splitlines())}
    assert code == 0
    for name in ("logo.png", "random.bin", "empty.eml", "README.md"):
        assert records[name]["status"] == "not-mail", records[name]
        assert records[name]["findings"] == [] and records[name]["verdict"] == "pass"
    assert records["real.eml"]["status"] == "ok" and records["real.eml"]["verdict"] != "pass"
    assert not_mail(b"\n\n   \n") == "only white space"
    # Padding pushes the mail fields past the sniffed window: still mail, still scanned ...
    padded = b"".join(b"X-Pad-%d: v\r\n" % i for i in range(11_000)) + PHISH.read_bytes()
    assert not_mail(padded) is None
    # ... but a long text that is no header block is not.
    assert not_mail(b"Offers and gift cards for you.\n" * 4000) == "text without a mail header"
    code, out, _ = run(capsys, "scan", str(folder))
    assert "not mail: 4 files" in out


def test_scan_exit_code_like_spamassassin_e(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clean = GOLDEN / "friend_link.eml"
    assert run(capsys, "scan", "-q", "-e", str(clean))[0] == 0
    assert run(capsys, "scan", "-q", "-e", str(PHISH), str(clean))[0] == 1
    assert run(capsys, "scan", "-q", str(PHISH))[0] == 0  # without -e, verdicts are data


def test_one_message_is_singular_defect_12(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "scan", str(GOLDEN / "friend_link.eml"))
    assert "1 message in " in out and "(1 job)" in out


class _Binary:
    """A stand-in for sys.stdin / sys.stdout with only the binary buffer (what filter uses)."""

    def __init__(self, buffer: io.BytesIO) -> None:
        self.buffer = buffer

    def flush(self) -> None:
        pass


def test_filter_prints_the_tagged_message_and_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "brandgate.toml").write_text("[gateway]\nspam_headers = true\n")
    raw = PHISH.read_bytes()
    forged = b"X-Spam-Flag: NO\r\nX-Brandgate-Verdict: pass\r\n" + raw
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdin", _Binary(io.BytesIO(forged)))
    monkeypatch.setattr(sys, "stdout", _Binary(out))
    code = cli(["filter", "-e", "--config", str(tmp_path)])
    data = out.getvalue()
    assert code == 1
    head = data.partition(b"\r\n\r\n")[0]
    assert data.endswith(raw)  # the message itself, byte for byte after our header fields
    assert head.count(b"X-Spam-Flag:") == 1 and b"X-Spam-Flag: YES" in head
    assert head.count(b"X-Brandgate-Verdict:") == 1 and b"X-Brandgate-Verdict: pass" not in head
    assert head.startswith(b"X-Brandgate-Status: ")


def test_version_and_shell_completion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("brandgate 0.")
    code, out, _ = run(capsys, "completion", "bash")
    assert code == 0 and "complete " in out and "brandgate" in out
    # argcomplete answers from the real parser, as the shell hook asks it (a subprocess:
    # it takes over file descriptors the way a shell expects)
    for line, want in (("brandgate qu", "quarantine"), ("brandgate scan --ex", "--exit-code")):
        out_file = tmp_path / "complete.txt"
        env = {
            **os.environ,
            "_ARGCOMPLETE": "1",
            "_ARGCOMPLETE_IFS": "\n",
            "COMP_LINE": line,
            "COMP_POINT": str(len(line)),
            "_ARGCOMPLETE_STDOUT_FILENAME": str(out_file),
        }
        subprocess.run(
            [sys.executable, "-m", "gateway.cli"], env=env, cwd=ROOT, timeout=120,
            capture_output=True, check=False,
        )  # fmt: skip
        assert want in out_file.read_text().split(), out_file.read_text()


def test_json_log_lines_carry_the_message_fields_as_keys() -> None:
    record = logging.LogRecord("brandgate.message", logging.INFO, "x", 1, "verdict=tag", (), None)
    record.fields = {"verdict": "tag", "score": "5.25", "rcpts": "a@b.example"}
    line = json.loads(JsonFormatter().format(record))
    assert line["logger"] == "brandgate.message" and line["verdict"] == "tag"
    assert line["score"] == "5.25" and line["level"] == "info" and line["time"].endswith("Z")


def test_syslog_option_sends_to_a_loopback_syslog(tmp_path: Path) -> None:
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(20)
    port = sock.getsockname()[1]
    res = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--syslog", f"127.0.0.1:{port}", "--log-format",
         "json", "quarantine", "list", "--quarantine-dir", str(tmp_path / "none")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert res.returncode == 1
    # nothing logs on that path at INFO; the logger works when something does:
    from gateway.cli.main import setup_logging

    setup_logging(False, "json", f"127.0.0.1:{port}")
    try:
        logging.getLogger("brandgate.test").warning("hello syslog")
        data = sock.recv(4096)
    finally:
        logging.basicConfig(force=True, handlers=[logging.StreamHandler()])
        sock.close()
    assert data.startswith(b"<20>")  # facility mail (2), severity warning (4)
    assert b'"message": "hello syslog"' in data


# --------------------------------------------------------------------------- replay


def test_replay_checks_its_report_path_before_the_run_defect_8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "ham").mkdir()
    (tmp_path / "ham" / "a.eml").write_bytes(PHISH.read_bytes())
    for target in (tmp_path / "no-dir" / "r.html", tmp_path):
        code, out, err = run(
            capsys, "replay", str(tmp_path / "ham"), "--labels", "folders", "--report", str(target)
        )
        assert code == 2 and out == "", err  # no scan ran: no summary
        assert err.startswith(f"brandgate replay: error: cannot write {target}: ")


def test_replay_defaults_leave_spam_out_and_warn_when_it_is_in_defect_11(
    tmp_path: Path,
) -> None:
    assert replay.DEFAULT_POSITIVE == ("phish",) and "spam" in replay.DEFAULT_OTHER
    write_msg(tmp_path / "phish" / "p1.eml", 9, "RULE_A")
    write_msg(tmp_path / "phish" / "p2.eml", 9, "RULE_A")
    write_msg(tmp_path / "spam" / "s1.eml", 0)
    write_msg(tmp_path / "ham" / "h1.eml", 0)
    doc = run_fake([str(tmp_path)], replay.FolderLabels(["phish", "spam", "ham"]))
    assert any("Counted as positives: spam" in n for n in doc["notes"])
    assert "phish 100 %" in doc["notes"][0] and "spam 0 %" in doc["notes"][0]


def test_replay_fpr_has_a_confidence_bound_defect_11() -> None:
    # 0 false positives in 711 negatives: the rate is known to be below ~0.42 %, not 0.
    bound = replay.upper_bound(0, 711)
    assert bound is not None and 0.0041 < bound < 0.0043
    assert replay.upper_bound(0, 0) is None
    assert abs((replay.upper_bound(5, 1000) or 0) - 0.01048) < 0.0001  # one-sided 95 %
    m = replay.with_bounds(replay.confusion(90, 0, 10, 711))
    assert m["fpr"] == 0 and m["fpr_upper95"] > 0.004 and m["recall_lower95"] < 0.9


def test_report_has_confusion_matrix_brands_bounds_and_a_legend_defect_11(
    tmp_path: Path,
) -> None:
    write_msg(tmp_path / "phish" / "p1.eml", 9, "RULE_A")
    write_msg(tmp_path / "phish" / "p2.eml", 1, "RULE_B")
    write_msg(tmp_path / "ham" / "h1.eml", 0)
    write_msg(tmp_path / "ham" / "h2.eml", 5, "RULE_B")
    doc = run_fake([str(tmp_path)], replay.FolderLabels(["phish", "ham"]))
    page = render(doc)
    assert 'class="confusion"' in page and "TP 1" in page and "FP 1" in page
    assert 'class="brands"' in page and "95 % upper bound" in page
    # the operating points are named in a legend, not in labels drawn over each other
    svg = page[page.index('class="pr-curve"') :]
    svg = svg[: svg.index("</svg>")]
    assert "configured: threshold" in svg and "recommended: threshold" in svg
    assert_labels_apart(page, svgs=3)  # two histograms and the precision/recall plot


def _label_boxes(svg: str) -> tuple[list[tuple[str, Box]], float, float]:
    """Each <text> of an SVG with the box it covers: a generous 0.6 em a character, 0.75 em
    above the baseline and 0.2 em below, moved by text-anchor and a rotate(-90 cx cy)."""
    import xml.etree.ElementTree as ET

    ns = "{http://www.w3.org/2000/svg}"
    root = ET.fromstring(svg)
    out = []
    for t in root.iter(ns + "text"):
        size, x, y = (float(t.get(k, "0")) for k in ("font-size", "x", "y"))
        text = "".join(t.itertext())
        width = 0.6 * size * len(text)
        x0 = x - {"start": 0.0, "middle": width / 2, "end": width}[t.get("text-anchor", "start")]
        box = (x0, y - 0.75 * size, x0 + width, y + 0.2 * size)
        turn = re.fullmatch(r"rotate\(-90 ([\d.]+) ([\d.]+)\)", t.get("transform", "") or "")
        if t.get("transform"):
            assert turn, t.get("transform")  # a transform this check does not know
            cx, cy = map(float, turn.groups())
            box = (cx + box[1] - cy, cy - (box[2] - cx), cx + box[3] - cy, cy - (box[0] - cx))
        out.append((text, box))
    return out, float(root.get("width", "0")), float(root.get("height", "0"))


Box = tuple[float, float, float, float]


def assert_labels_apart(page: str, svgs: int) -> None:
    """No two labels of any plot on the page overlap, and none is cut off by the canvas."""
    found = re.findall(r"<svg .*?</svg>", page, re.S)
    assert len(found) == svgs
    for svg in found:
        boxes, width, height = _label_boxes(svg)
        assert boxes
        for text, (x0, y0, x1, y1) in boxes:
            assert min(x0, y0) >= 0 and x1 <= width and y1 <= height, (text, width, height)
        for i, (a, ba) in enumerate(boxes):
            for b, bb in boxes[i + 1 :]:
                apart = ba[2] <= bb[0] or bb[2] <= ba[0] or ba[3] <= bb[1] or bb[3] <= ba[1]
                assert apart, f"{a!r} {ba} overlaps {b!r} {bb}"


def test_report_labels_do_not_overlap_when_thresholds_crowd_defect_11(tmp_path: Path) -> None:
    # A wide score range (one phish at 80) puts tag, quarantine and reject a few pixels apart
    # on the histograms; thresholds with decimals make the legend entries long.
    for i, score in enumerate([9, 5.25, 1, 13.75, 80]):
        write_msg(tmp_path / "phish" / f"p{i}.eml", score, "RULE_A")
    for i, score in enumerate([0, 0, 2, 4.25, 8.5]):
        write_msg(tmp_path / "ham" / f"h{i}.eml", score, "RULE_B")
    doc = run_fake([str(tmp_path)], replay.FolderLabels(["phish", "ham"]))
    page = render(doc)
    assert "configured: threshold 4.25" in page and "recommended: threshold 9" in page
    assert_labels_apart(page, svgs=3)


def test_report_says_which_sweep_rows_it_shows_defect_12(tmp_path: Path) -> None:
    # Over 2 x SWEEP_ROWS candidate thresholds: the table shows every 2nd one.
    from gateway.archives.report import SWEEP_ROWS

    for i in range(2 * SWEEP_ROWS + 10):
        label = "phish" if i % 2 else "ham"
        write_msg(tmp_path / label / f"m{i}.eml", i / 10, "RULE_A")
    doc = run_fake([str(tmp_path)], replay.FolderLabels(["phish", "ham"]))
    points = len(doc["sweep"]["points"])
    assert 2 * SWEEP_ROWS <= points < 3 * SWEEP_ROWS, points
    assert f"{points} candidate thresholds; every 2nd shown here, all of them in the JSON " in (
        render(doc)
    )


def test_replay_tally_counts_brands_and_leaves_not_mail_out() -> None:
    t = replay.Tally(replay.LabelPolicy.of(["phish"], ["ham"]))
    t.add("a", "phish", {"verdict": "tag", "score": 5, "brand": "Amazon"})
    t.add("b", "phish", {"verdict": "pass", "score": 0, "brand": "Amazon"})
    t.add("c", "ham", {"verdict": "pass", "score": 0, "brand": None})
    t.add("d", "ham", {"verdict": "pass", "status": "not-mail"})
    assert t.messages == 3 and t.not_mail.total == 1
    rows = {r["brand"]: r for r in t.brand_stats()}
    assert rows["Amazon"]["positive"] == 2 and rows["Amazon"]["recall"] == 0.5
    assert rows[replay.NO_CLAIM]["negative"] == 1


def test_small_wording_defect_12() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd"
    ]  # fmt: skip
    from filters.checks._common import a_or_an

    assert (a_or_an("Amazon"), a_or_an("PayPal"), a_or_an("eBay")) == (
        "an Amazon",
        "a PayPal",
        "an eBay",
    )


def test_rules_columns_are_aligned_with_a_header_defect_12(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "rules")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["rule", "weight", "group"]
    starts = Counter(ln.index(ln.split()[2], len(ln.split()[0]) + 8) for ln in lines[1:])
    assert len(starts) == 1, starts  # the group column starts at one place on every line


def test_mbox_progress_has_a_total(tmp_path: Path) -> None:
    box = mbox(tmp_path)
    assert estimate_messages([str(box)]) == 2
    assert estimate_messages([str(box), str(PHISH)]) == 3
    assert estimate_messages(["-"]) is None
