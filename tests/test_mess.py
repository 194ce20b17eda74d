"""Real-world mess: odd file names, junk beside the photos, links pasted from a browser, a full
disk. One bad item is that item's error row and the run goes on; every image gets its row once,
in every output format and through --resume."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from captioner import exports
from captioner.cli import main
from captioner.fetch import FetchPolicy, URLRefused, fetch_bytes, normalise_url
from helpers import SRC, encode, files_handler, kill_once_written, photo, serve_on_loopback
from messy import RAW_NAME, assert_each_once, messy_folder, read_rows

@pytest.mark.parametrize("name", ["captions.jsonl", "captions.csv", "captions.parquet", "metadata.jsonl",
                                  "metadata.csv"])
def test_messy_folder_each_image_once_in_every_format_and_after_resume(tiny_checkpoint, tmp_path, name, capsys):
    root = tmp_path / "disk"
    good, bad = messy_folder(root)
    out = root / name if name.startswith("metadata.") else tmp_path / name
    command = ["caption", "--model", str(tiny_checkpoint), "--batch-size", "4", "--output", str(out), str(root)]
    assert main(command) == 1  # some items failed, each with its row
    assert "Traceback" not in capsys.readouterr().err
    first = read_rows(out)
    assert_each_once(first, good, bad, errors=not name.startswith("metadata."))
    assert any(row["path"] == str(root / RAW_NAME) for row in first)
    if not name.endswith(".parquet"):
        # A run cut short anywhere, even inside a quoted name that holds a newline: --resume
        # drops the torn record and finishes each image once.
        data = out.read_bytes()
        cut = data.index(b"new\nline") + 5 if name.endswith(".csv") else len(data) // 2
        out.write_bytes(data[:cut])
    else:
        Path(out).unlink()  # and a finished Parquet file is resumed from its rows
        journal = [json.dumps({k: v for k, v in row.items() if v is not None}) + "\n" for row in first[:7]]
        out.with_name(out.name + ".partial.jsonl").write_text("".join(journal) + '{"path": "x', encoding="utf-8")
    assert main([*command, "--resume"]) in (0, 1)
    assert "Traceback" not in capsys.readouterr().err
    if name.startswith("metadata."):
        assert sorted(row["path"] for row in read_rows(out)) == sorted(row["path"] for row in first)
    else:
        assert read_rows(out) == first


def finished_records(data: bytes, quoted: bool) -> bytes:
    """What a killed run had finished: up to the last line end that is not inside a quoted CSV field."""
    end = len(data)
    while (end := data.rfind(b"\n", 0, end)) >= 0:
        if not quoted or data.count(b'"', 0, end) % 2 == 0:
            return data[: end + 1]
    return b""


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_messy_folder_killed_mid_run_then_resumed_gives_each_image_once(tiny_checkpoint, tmp_path, suffix):
    root = tmp_path / "disk"
    good, bad = messy_folder(root, copies=10)
    out = tmp_path / f"captions{suffix}"
    written = out.with_name(out.name + ".partial.jsonl") if suffix == ".parquet" else out
    command = [sys.executable, "-m", "captioner", "caption", "--model", str(tiny_checkpoint), "--output", str(out),
               "--batch-size", "4", str(root)]
    env = kill_once_written(command, written, 40)  # SIGKILL: no handler, no flush, no clean-up runs
    finished = finished_records(written.read_bytes(), quoted=suffix == ".csv")
    assert 40 <= finished.count(b"\n") < len(good + bad), "killed too late to test anything"
    resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 1 and "Traceback" not in resumed.stderr, resumed.stderr[-2000:]
    if suffix == ".parquet":
        assert not written.exists()  # the journal is gone once the Parquet file is whole
    else:
        assert out.read_bytes().startswith(finished)  # what was finished is kept byte for byte
    rows = read_rows(out)
    assert_each_once(rows, good, bad)
    # In the order of a run never stopped: the folder's files, sorted as paths.
    assert [row["path"] for row in rows] == [str(p) for p in sorted(map(Path, good + bad))]


def test_messy_folder_to_the_terminal_one_line_per_image(tiny_checkpoint, tmp_path, capsys):
    root = tmp_path / "disk"
    good, bad = messy_folder(root)
    env = {**os.environ, "PYTHONPATH": SRC}
    # In a process of its own, as a person runs it: the bytes on stdout must be UTF-8 whatever the names.
    done = subprocess.run([sys.executable, "-m", "captioner", "caption", "--model", str(tiny_checkpoint), str(root)],
                          env=env, capture_output=True, timeout=300)
    assert done.returncode == 1 and b"Traceback" not in done.stderr, done.stderr[-2000:]
    lines = done.stdout.decode("utf-8").splitlines()
    assert len(lines) == len(good) + len(bad) and sum("\tERROR: " in line for line in lines) == len(bad)
    assert f"{root}/new\\nline.png\t" in done.stdout.decode()
    # JSON lines, in this process: text that encodes as UTF-8 (no lone surrogates from raw names).
    assert main(["caption", "--model", str(tiny_checkpoint), "--json", str(root)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert all(line.encode("utf-8") for line in lines)
    assert sorted(json.loads(line)["path"] for line in lines) == sorted(good + bad)


def test_sidecars_in_a_messy_folder_and_a_persons_caption_in_any_encoding(tiny_checkpoint, tmp_path, capsys):
    root = tmp_path / "disk"
    good, bad = messy_folder(root)
    persons = root / "plain.txt"
    persons.write_bytes(b"caf\xe9 au lait (latin-1)\n")  # someone's caption, not UTF-8
    (root / "UPPER.txt").mkdir()  # a caption file that cannot be written: a folder is in the way
    rows = tmp_path / "rows.jsonl"
    command = ["caption", "--model", str(tiny_checkpoint), "--sidecar", ".txt", "--existing", "append",
               "--output", str(rows), str(root)]
    assert main(command) == 1
    assert "Traceback" not in capsys.readouterr().err
    by_path = {row["path"]: row for row in read_rows(rows)}
    assert sorted(by_path) == sorted(good + bad)
    assert "cannot write its caption file UPPER.txt" in by_path[str(root / "UPPER.JPG")]["error"]
    assert persons.read_bytes().startswith(b"caf\xe9 au lait (latin-1) ")  # kept byte for byte
    written = [Path(p).with_suffix(".txt") for p in good if not p.endswith(("UPPER.JPG", "alias.jpg"))]
    assert all(p.is_file() and p.read_bytes().strip() for p in written)
    assert Path(root / RAW_NAME).with_suffix(".txt").read_text(encoding="utf-8").strip() == by_path[str(root / RAW_NAME)]["caption"]


def test_an_unreadable_image_is_its_own_error_row(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    root = tmp_path / "disk"
    root.mkdir()
    for name in ("a.png", "locked.png", "c.png"):
        (root / name).write_bytes(encode(photo(len(name))))
    real_open = Path.open

    def open_refusing(self, *args, **kwargs):
        if self.name == "locked.png":  # as a file of another user would (tests run as root)
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_refusing)
    out = tmp_path / "rows.jsonl"
    assert main(["caption", "--model", str(tiny_checkpoint), "--output", str(out), str(root)]) == 1
    rows = {Path(row["path"]).name: row for row in read_rows(out)}
    assert rows["locked.png"]["error"] == "locked.png: cannot be read (Permission denied)"
    assert "caption" in rows["a.png"] and "caption" in rows["c.png"]


def test_a_full_disk_stops_the_run_keeps_the_rows_and_says_resume(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    root = tmp_path / "disk"
    good, bad = messy_folder(root)
    out = tmp_path / "rows.jsonl"
    command = ["caption", "--model", str(tiny_checkpoint), "--batch-size", "4", "--output", str(out), str(root)]
    calls = []

    def fsync_then_full(descriptor):
        calls.append(descriptor)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(exports.os, "fsync", fsync_then_full)
    assert main(command) == 2
    err = capsys.readouterr().err
    message = err.strip().splitlines()[-1]  # below the progress bar
    assert "Traceback" not in err and message.startswith("error: cannot write ")
    assert "No space left on device" in message and "--resume" in message
    assert len(read_rows(out)) >= 8  # the batches written before it stay
    monkeypatch.undo()
    assert main([*command, "--resume"]) == 1
    assert_each_once(read_rows(out), good, bad)


# A photo at a path with spaces and non-ASCII, served only at the address a browser requests.
PHOTO_BY_NAME = files_handler({"/caf%C3%A9%20%E2%98%95%20photo.png?size=large&q=a%20b": encode(photo(3))})


def test_a_link_pasted_from_the_address_bar_is_fetched_and_captioned(tiny_checkpoint, tmp_path, capsys):
    with serve_on_loopback(PHOTO_BY_NAME) as base:
        pasted = f"  {base}/café ☕ photo.png?size=large&q=a b#section\n"
        assert fetch_bytes(pasted, FetchPolicy(allow_private=True)) == encode(photo(3))
        out = tmp_path / "rows.jsonl"
        links = [pasted.strip(), "http://[::1/x.jpg", "http://exa mple.com/x.jpg", "http://example.com:99999/x.jpg",
                 "ftp://example.com/x.jpg"]
        code = main(["caption", "--model", str(tiny_checkpoint), "--allow-private-urls", "--output", str(out), *links])
    assert code == 1
    rows = read_rows(out)
    assert [row["path"] for row in rows] == links  # each link once, named as given
    assert "caption" in rows[0]
    assert [row["error"] for row in rows[1:]] == [
        "the link cannot be read: its host is malformed",
        "the link's host 'exa mple.com' is not a valid host name",
        "the link cannot be read: its port is not a number from 1 to 65535",
        "only http and https image links are fetched; got ftp scheme",
    ]


@pytest.mark.parametrize("pasted, sent", [
    ("http://Example.COM/a b/ç.jpg", "http://example.com/a%20b/%C3%A7.jpg"),
    ("https://bücher.example/ä.png?x=ü y", "https://xn--bcher-kva.example/%C3%A4.png?x=%C3%BC%20y"),
    ("http://example.com/already%20encoded.jpg", "http://example.com/already%20encoded.jpg"),
    ("http://example.com\\photos\\cat.jpg", "http://example.com/photos/cat.jpg"),
    ("http://exam\tple.com/ca\nt.jpg", "http://example.com/cat.jpg"),
    ("http://user:secret@example.com:8080/cat.jpg#frag", "http://example.com:8080/cat.jpg"),
    ("http://[2001:db8::1]/cat.jpg", "http://[2001:db8::1]/cat.jpg"),
    ('http://example.com/"quoted" <cat>.jpg', "http://example.com/%22quoted%22%20%3Ccat%3E.jpg"),
])
def test_links_are_encoded_as_a_browser_sends_them(pasted, sent):
    assert normalise_url(pasted) == sent


@pytest.mark.parametrize("link, reason", [
    ("http://", "the link has no host"),
    ("http://example.com:0/x", "its port is not a number"),
    ("http://a..b/x", "is not a valid host name"),
    ("http://exa\x00mple.com/", "control characters"),
    ("javascript:alert(1)", "only http and https"),
])
def test_a_malformed_link_says_what_is_wrong_with_it(link, reason):
    with pytest.raises(URLRefused, match=reason.replace("(", r"\(")):
        normalise_url(link)


def test_connection_failures_are_sentences_not_library_text():
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(URLRefused) as refused:
        fetch_bytes(f"http://127.0.0.1:{port}/x.png", FetchPolicy(allow_private=True))
    assert str(refused.value) == "could not connect to 127.0.0.1: the connection was refused"
    with serve_on_loopback(PHOTO_BY_NAME) as base:  # plain HTTP spoken to as TLS
        with pytest.raises(URLRefused) as tls:
            fetch_bytes(base.replace("http://", "https://") + "/x.png", FetchPolicy(allow_private=True))
    assert str(tls.value) == "could not connect to 127.0.0.1: the secure (TLS) connection failed"


def test_a_list_made_on_another_machine_names_every_file(tiny_checkpoint, tmp_path, capsys):
    root = tmp_path / "disk"
    good, bad = messy_folder(root)
    listed = [p for p in good if "\n" not in p and p == p.strip()]  # one name a line
    # As `find` writes it on Linux (raw bytes), saved by a Windows editor (BOM, CRLF), with a comment.
    data = b"\xef\xbb\xbf# photos to caption\r\n" + b"".join(os.fsencode(p) + b"\r\n" for p in listed)
    (tmp_path / "list.txt").write_bytes(data)
    out = tmp_path / "rows.jsonl"
    assert main(["caption", "--model", str(tiny_checkpoint), "--from-list", str(tmp_path / "list.txt"),
                 "--output", str(out)]) == 0
    assert sorted(row["path"] for row in read_rows(out)) == sorted(listed)
