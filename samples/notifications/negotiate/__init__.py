import azure.functions as func


def main(req: func.HttpRequest, connection: str) -> func.HttpResponse:
    # the binding's JSON ({"baseUrl", "url", "accessToken"}) goes to the page as it is
    return func.HttpResponse(connection)
