"""The browsable API docs at /docs, served entirely by optflow.

sanic-ext's Swagger page loads its scripts from a CDN and fetches its OAuth2 redirect page from
one at run time; optflow must work offline and download nothing, so the page is our own template
pointing at the Swagger UI files shipped in the `swagger-ui-bundle` package.
"""

from __future__ import annotations

from pathlib import Path

from sanic import Request, Sanic
from sanic.response import HTTPResponse, file

DOCS_PREFIX = "/docs"
OAUTH2_REDIRECT = f"{DOCS_PREFIX}/oauth2-redirect.html"


def configure_docs_ui(app: Sanic) -> None:
    """Call before `Extend(app)`: our page template, no ReDoc page (it needs a CDN)."""
    app.config.OAS_UI_REDOC = False
    app.config.OAS_UI_DEFAULT = "swagger"
    app.config.OAS_URI_TO_SWAGGER = "/swagger"
    app.config.OAS_PATH_TO_SWAGGER_HTML = str(Path(__file__).with_name("swagger.html"))


def install_docs_assets(app: Sanic) -> None:
    """Serve the Swagger UI files, and answer the OAuth2 redirect page from them too."""
    from swagger_ui_bundle import swagger_ui_path

    assets = Path(swagger_ui_path)
    app.static(f"{DOCS_PREFIX}/assets", assets, name="docs_assets")

    @app.on_request
    async def local_oauth2_redirect(request: Request) -> HTTPResponse | None:
        if request.path == OAUTH2_REDIRECT:
            return await file(assets / "oauth2-redirect.html")
        return None
