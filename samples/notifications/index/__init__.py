import os

import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    page = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "index.html")
    with open(page, encoding="utf-8") as f:
        return func.HttpResponse(f.read(), mimetype="text/html")
