"""An independent GraphQL client (Python's gql, not our server's library)
driving eshop's GraphQL API, for tests/tests/graphql.rs.

Usage: graphql_client.py BASE_URL ORDER_ID CUSTOMER_ID

1. Fetches the schema by introspection and validates its query against it
   (gql does so on the client side), then runs it over HTTP and prints the
   result as one JSON line.
2. Subscribes to customerOrders over WebSocket with graphql-transport-ws,
   prints the first order pushed as one JSON line and exits.
"""

import asyncio
import json
import os
import sys

from gql import Client, gql
from gql.transport.aiohttp import AIOHTTPTransport
from gql.transport.websockets import WebsocketsTransport

QUERY = gql(
    """
    query Order($id: ID!, $customer: ID!) {
      order(id: $id) {
        id status total { amount currency formatted }
        lines { sku quantity product { sku name } }
      }
      orders(customerId: $customer, first: 5) {
        edges { cursor node { id } }
        pageInfo { hasNextPage }
      }
    }
    """
)

SUBSCRIPTION = gql(
    """
    subscription Placed($customer: ID!) {
      customerOrders(customerId: $customer) { id status total { amount } }
    }
    """
)


async def main(base: str, order_id: str, customer_id: str) -> None:
    # An access token from the issuer eshop trusts, as any client gets one.
    authorization = f"Bearer {os.environ['ESHOP_ACCESS_TOKEN']}"
    http = AIOHTTPTransport(
        url=f"{base}/graphql", headers={"Authorization": authorization}
    )
    async with Client(transport=http, fetch_schema_from_transport=True) as session:
        result = await session.execute(
            QUERY, variable_values={"id": order_id, "customer": customer_id}
        )
        print(json.dumps(result), flush=True)

    ws_url = base.replace("http", "ws", 1) + "/graphql/ws"
    ws = WebsocketsTransport(
        url=ws_url,
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        init_payload={"Authorization": authorization},
    )
    async with Client(transport=ws) as session:
        async for pushed in session.subscribe(
            SUBSCRIPTION, variable_values={"customer": customer_id}
        ):
            print(json.dumps(pushed), flush=True)
            return


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
