//! Request bodies the end-to-end tests send again and again: a product
//! with ample stock and a fresh SKU, a basket of a new customer, a
//! checkout's shipping address.

use serde_json::{Value, json};
use uuid::Uuid;

/// `POST /products`: a mug at 9.00 EUR, 100 in stock, under a SKU no
/// other test uses.
#[must_use]
pub fn new_product() -> Value {
    json!({"sku": format!("SKU-{}", Uuid::now_v7().simple()), "name": "Mug",
           "description": "A mug", "initial_stock": 100,
           "price": {"amount_minor": 900, "currency": "EUR"}})
}

/// `POST /baskets`: the basket of a new customer.
#[must_use]
pub fn new_basket() -> Value {
    json!({"customer_id": Uuid::now_v7()})
}

/// `POST /baskets/{id}/checkout`: a London address.
#[must_use]
pub fn checkout() -> Value {
    json!({"shipping_address": {"recipient": "Ada", "line1": "1 Road",
           "city": "London", "postal_code": "N1", "country": "GB"}})
}
