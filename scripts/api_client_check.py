"""A calling service's view of the API: a Python client generated from /openapi.json by
openapi-python-client calls content, search, tag, feedback and recommend on the real server,
and every answer parses into the generated models (a status the document does not declare, or
a body that does not fit its schema, fails here).

    python api_client_check.py URL KEY          (the generated package on PYTHONPATH)
"""

import sys

from signaldesk_client import AuthenticatedClient
from signaldesk_client.api.content import get_item, ingest, search
from signaldesk_client.api.recommend import feedback, recommend
from signaldesk_client.api.tagging import tag
from signaldesk_client.models import (
    ContentIn,
    ErrorBody,
    FeedbackBodyType0,
    FeedbackBodyType0Type,
    RecommendBody,
    TagItem,
)


def ok(response, status=200):
    """The parsed answer of a call that must succeed with `status`."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response.parsed is not None and not isinstance(response.parsed, ErrorBody), response.content[:500]
    return response.parsed


def main(url: str, key: str) -> None:
    client = AuthenticatedClient(base_url=url, token=key, raise_on_unexpected_status=True)
    items = [
        ContentIn(
            id=f"client-{i}",
            title=title,
            body=body,
            source="client-check",
            published_at="2026-11-0{}T08:00:00Z".format(i + 1),
        )
        for i, (title, body) in enumerate(
            [
                ("Wheat harvest beats forecasts", "Farmers brought in a record wheat and corn harvest this autumn, grain traders said."),
                ("Central bank holds rates", "The central bank kept its interest rate unchanged, citing steady inflation and money supply."),
                ("Oil prices climb", "Crude oil prices rose after producers agreed to cut output, lifting energy shares."),
            ]
        )
    ]
    answer = ok(ingest.sync_detailed(client=client, body=items))
    assert [a.id for a in answer.items] == [i.id for i in items], answer

    hits = ok(search.sync_detailed(client=client, q="wheat harvest", k=3, filter_="source=client-check")).hits
    assert hits and hits[0]["id"] == "client-0", hits

    tagged = ok(tag.sync_detailed(client=client, body=TagItem(title="Grain exports", body="Wheat and corn exports rose.")))
    assert tagged.items and tagged.items[0].tags, tagged

    stored = ok(get_item.sync_detailed(client=client, id="client-1"))
    assert stored.item["id"] == "client-1", stored

    event = FeedbackBodyType0(type_=FeedbackBodyType0Type.EVENT, user="client-reader", item="client-2", event="click")
    ok(feedback.sync_detailed(client=client, body=event), status=202)
    unknown = FeedbackBodyType0(type_=FeedbackBodyType0Type.EVENT, user="client-reader", item="no-such-item", event="click")
    refused = feedback.sync_detailed(client=client, body=unknown)
    assert refused.status_code == 422 and isinstance(refused.parsed, ErrorBody), refused.content
    assert refused.parsed.error.field == "item", refused.parsed

    listed = ok(recommend.sync_detailed(client=client, body=RecommendBody(user="a-new-reader", k=2)))
    assert len(listed.items) == 2, listed
    print(f"api client: content, search, tag, feedback and recommend answered as documented ({len(hits)} hits)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
