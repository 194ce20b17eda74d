"""Image links through the app (gradio_client, the page's link box), the CLI, and the caption tools
over MCP, against an image server of the test's own on 127.0.0.1 (links to it need
allow_private_urls, which is how an intranet deployment would run)."""

import asyncio
import json

import pytest
from gradio_client import handle_file

from captioner.app.service import AppLimits
from captioner.cli import main
from captioner.quality import caption_flags
from helpers import RunningApp, encode, files_handler, mcp_session, photo, serve_on_loopback

IMAGES = {"/cat.png": encode(photo(31)), "/dog.jpg": encode(photo(32), "JPEG"), "/page.png": b"<html>no</html>"}


@pytest.fixture(scope="module")
def images_server():
    with serve_on_loopback(files_handler(IMAGES)) as url:
        yield url


@pytest.fixture(scope="module")
def intranet_app(captioner, running_app):  # running_app first: it points `import app` at the tiny model
    app = RunningApp(captioner, AppLimits(allow_private_urls=True))
    yield app
    app.close()


def core(captioner, data):
    from captioner import load_image

    return captioner.caption([load_image(data)])[0][0].text


def test_caption_endpoint_takes_an_image_link(intranet_app, captioner, images_server):
    client = intranet_app.client()
    answer = client.predict(handle_file(f"{images_server}/cat.png"), api_name="/caption")
    assert answer == core(captioner, IMAGES["/cat.png"])
    with pytest.raises(Exception, match="HTML"):
        client.predict(handle_file(f"{images_server}/page.png"), api_name="/caption")
    assert client.predict(handle_file(f"{images_server}/dog.jpg"), api_name="/caption") == core(captioner, IMAGES["/dog.jpg"])


def test_a_public_app_refuses_a_private_link_and_keeps_serving(running_app, captioner, images_server, tmp_path):
    client = running_app.client()
    with pytest.raises(Exception, match=r"is in 127.0.0.0/8, Loopback: links to it are refused"):
        client.predict(handle_file(f"{images_server}/cat.png"), api_name="/caption")
    with pytest.raises(Exception, match=r"metadata service \(AWS.*in 169.254.0.0/16, Link Local"):
        client.predict("http://169.254.169.254/latest/meta-data/", api_name="/caption_image")  # never connected
    photo(33).save(tmp_path / "ok.png")
    assert client.predict(handle_file(str(tmp_path / "ok.png")), api_name="/caption") == core(captioner, tmp_path / "ok.png")


def test_link_tools_through_the_api(intranet_app, captioner, images_server):
    client = intranet_app.client()
    assert client.predict(f"{images_server}/cat.png", api_name="/caption_image") == core(captioner, IMAGES["/cat.png"])
    several = client.predict(f"{images_server}/cat.png", num_captions=2, api_name="/caption_image")
    assert several.startswith("1. ") and "score" in several and len(several.splitlines()) == 2
    many = client.predict([f"{images_server}/cat.png", f"{images_server}/missing.png", f"{images_server}/dog.jpg"],
                          api_name="/caption_images")
    assert many[0] == core(captioner, IMAGES["/cat.png"]) and many[2] == core(captioner, IMAGES["/dog.jpg"])
    assert many[1].startswith("Could not caption this image:") and "404" in many[1]
    with pytest.raises(Exception, match="num_beams must be an integer from 1 to 8"):
        client.predict(f"{images_server}/cat.png", num_beams=99, api_name="/caption_image")


def test_cli_captions_links_with_the_same_fetcher(tiny_checkpoint, captioner, images_server, capsys):
    # In this process; test_link_doors.py runs the command in one of its own.
    assert main(["caption", "--json", "--model", str(tiny_checkpoint), f"{images_server}/cat.png"]) == 1
    assert "Loopback" in json.loads(capsys.readouterr().out)["error"]
    assert main(["caption", "--json", "--model", str(tiny_checkpoint), "--allow-private-urls",
                 f"{images_server}/cat.png", f"{images_server}/page.png"]) == 1
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    caption = core(captioner, IMAGES["/cat.png"])
    assert rows[0] == {"path": f"{images_server}/cat.png", "caption": caption, "flags": caption_flags(caption)}
    assert "HTML" in rows[1]["error"] and len(rows) == 2


async def mcp_calls(url, image_url):
    """List the tools and call caption_image once."""
    tools, [result] = await mcp_session(url, [("caption_image", {"image_url": image_url})])
    return tools, result


def test_an_agent_captions_a_link_with_one_mcp_tool_call(intranet_app, captioner, images_server):
    tools, result = asyncio.run(mcp_calls(f"{intranet_app.url}gradio_api/mcp/", f"{images_server}/cat.png"))
    assert set(tools) == {"caption_image", "caption_images"}  # the page's handlers are not tools
    tool = tools["caption_image"]
    assert tool.description.startswith("Describe the image at a link in one English sentence.")
    properties = tool.inputSchema["properties"]
    assert list(properties)[:3] == ["image_url", "strategy", "max_length"]
    assert all(properties[name].get("description") for name in properties), properties
    assert "2 to 64" in properties["max_length"]["description"] and properties["max_length"]["default"] == 16
    assert properties["strategy"].get("enum") == ["beam", "greedy", "sample"]
    text = result.content[0].text
    client = intranet_app.client()
    assert text == client.predict(handle_file(f"{images_server}/cat.png"), api_name="/caption")


def test_mcp_refuses_a_private_link_on_a_public_app(running_app):
    # Refused by the address check before any connection: nothing is sent to 10.0.0.1.
    _, bad = asyncio.run(mcp_calls(f"{running_app.url}gradio_api/mcp/", "http://10.0.0.1/x.png"))
    assert bad.isError and "Private-Use: links to it are refused" in bad.content[0].text


def test_the_mcp_schema_marks_only_the_two_tools_as_tools(running_app):
    import httpx

    schema = httpx.get(f"{running_app.url}gradio_api/mcp/schema", timeout=30).json()
    kinds = {entry["name"]: entry["meta"]["mcp_type"] for entry in schema}
    assert {name for name, kind in kinds.items() if kind == "tool"} == {"caption_image", "caption_images"}
    # gradio's API page lists the page's endpoints too: their descriptions are for people.
    descriptions = {entry["name"]: entry["description"] for entry in schema}
    assert descriptions["caption"].startswith("Caption an uploaded photo with the given settings")
    assert not any("queued request" in text for text in descriptions.values())
