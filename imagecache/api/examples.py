"""A realistic Kentik chart query: the API's documented example, and the
simulator's and the tests' starting point. Free of Django imports."""

from typing import Any


def chart_query(
    title: str = "Total traffic", image_type: str = "png", **query: Any
) -> dict[str, Any]:
    """A topXchart body as clients send it, a null-valued key included;
    `query` replaces or adds fields of the query itself."""
    return {
        "queries": [
            {
                "bucket": "Left +Y Axis",
                "isOverlay": False,
                "query": {
                    "metric": "bytes",
                    "dimension": ["Traffic"],
                    "topx": "8",
                    "depth": "100",
                    "fastData": "Auto",
                    "outsort": "avg_bits_per_sec",
                    "lookback_seconds": 3600,
                    "starting_time": None,
                    "viz_type": "stackedArea",
                    "query_title": title,
                    "all_selected": True,
                    "filters_obj": None,
                    **query,
                },
            }
        ],
        "imageType": image_type,
    }
