import pytest

pytestmark = pytest.mark.django_db


def test_schema_describes_every_endpoint_and_answer(client):
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    schema = response.json()
    assert set(schema["paths"]) == {
        "/requests",
        "/image/{entry_id}",
        "/charts/{slug}.{ext}",
        "/charts/",
        "/charts/{slug}",
        "/info",
    }
    page = schema["paths"]["/charts/{slug}"]
    assert set(page) == {"get", "put", "delete"}
    assert set(page["get"]["responses"]["200"]["content"]) == {"text/html", "application/json"}
    assert {"200", "201", "400", "401", "403"} <= set(page["put"]["responses"])
    assert set(page["put"]["requestBody"]["content"]) == {"application/json"}
    assert {"204", "401", "403", "404"} <= set(page["delete"]["responses"])
    assert {"200", "403"} <= set(schema["paths"]["/charts/"]["get"]["responses"])
    chart = schema["paths"]["/charts/{slug}.{ext}"]["get"]["responses"]
    assert {"200", "202", "304", "400", "403", "404"} <= set(chart)
    image = schema["paths"]["/image/{entry_id}"]["get"]["responses"]
    assert set(image["200"]["content"]) == {
        "image/png",
        "image/jpeg",
        "image/svg+xml",
        "application/pdf",
    }
    assert {"400", "401", "403", "404", "429", "500", "502", "503", "504"} <= set(image)
    request = schema["paths"]["/requests"]["post"]
    assert set(request["requestBody"]["content"]) == {"application/json"}
    assert {"200", "400", "403", "413"} <= set(request["responses"])


def test_swagger_ui_is_served_with_bundled_assets(client):
    response = client.get("/docs")
    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page
    assert "cdn" not in page.lower()


def test_body_that_is_not_an_object_names_no_field_but_is_a_dict(client):
    response = client.post("/requests", "[1, 2]", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["fields"] == {
        "non_field_errors": ["The request body must be a JSON object."]
    }
