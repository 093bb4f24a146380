//! Given/when/then tests of the Basket aggregate: every command, and every
//! rejection a command can produce.

use cqrs_es::Aggregate;
use cqrs_es::test::{AggregateTestExecutor, TestFramework};
use uuid::Uuid;

use crate::error::ErrorKind;
use crate::ids::{CustomerId, OrderId, ProductId};
use crate::money::{MAX_UNIT_PRICE_MINOR, Money};
use crate::text::{ProductName, Sku};

use super::{
    Basket, BasketCommand, BasketError, BasketEvent, BasketStatus, MAX_LINES, MAX_QUANTITY,
    ProductOffer,
};

fn eur(minor: i64) -> Money {
    Money::new(minor, "EUR".parse().expect("EUR is ISO 4217"))
}

fn usd(minor: i64) -> Money {
    Money::new(minor, "USD".parse().expect("USD is ISO 4217"))
}

fn product(n: u128) -> ProductId {
    ProductId::from_uuid(Uuid::from_u128(n))
}

fn customer() -> CustomerId {
    CustomerId::from_uuid(Uuid::from_u128(0xC0FFEE))
}

fn order() -> OrderId {
    OrderId::from_uuid(Uuid::from_u128(0x0DE5))
}

fn sku(n: u128) -> Sku {
    Sku::parse(&format!("SKU-{n}")).expect("valid SKU")
}

fn name(n: u128) -> ProductName {
    ProductName::parse(&format!("Product {n}")).expect("valid product name")
}

fn offer(n: u128, unit_price: Money) -> ProductOffer {
    ProductOffer {
        product_id: product(n),
        sku: sku(n),
        name: name(n),
        unit_price,
        discontinued: false,
    }
}

fn opened() -> BasketEvent {
    BasketEvent::BasketOpened {
        customer_id: customer(),
    }
}

fn added(n: u128, unit_price: Money, quantity: u32) -> BasketEvent {
    BasketEvent::ItemAdded {
        product_id: product(n),
        sku: sku(n),
        name: name(n),
        unit_price,
        quantity,
    }
}

fn checked_out() -> BasketEvent {
    BasketEvent::BasketCheckedOut { order_id: order() }
}

/// An open basket holding `lines` different products, one unit each.
fn open_with_lines(lines: u128) -> Vec<BasketEvent> {
    let mut events = vec![opened()];
    events.extend((1..=lines).map(|n| added(n, eur(100), 1)));
    events
}

fn given(events: Vec<BasketEvent>) -> AggregateTestExecutor<Basket> {
    TestFramework::<Basket>::with(()).given(events)
}

fn not_opened() -> AggregateTestExecutor<Basket> {
    TestFramework::<Basket>::with(()).given_no_previous_events()
}

fn replay(events: Vec<BasketEvent>) -> Basket {
    let mut basket = Basket::default();
    for event in events {
        basket.apply(event);
    }
    basket
}

/// One command of each kind that changes an open basket with product 1 in it.
fn every_change() -> Vec<BasketCommand> {
    vec![
        BasketCommand::AddItem {
            product: offer(2, eur(250)),
            quantity: 1,
        },
        BasketCommand::ChangeQuantity {
            product_id: product(1),
            quantity: 3,
        },
        BasketCommand::RemoveItem {
            product_id: product(1),
        },
        BasketCommand::Clear,
        BasketCommand::CheckOut { order_id: order() },
    ]
}

// Open

#[test]
fn opening_a_new_basket_records_its_customer() {
    not_opened()
        .when(BasketCommand::Open {
            customer_id: customer(),
        })
        .then_expect_events(vec![opened()]);
}

#[test]
fn an_opened_basket_is_open_empty_and_belongs_to_its_customer() {
    let basket = replay(vec![opened()]);
    assert_eq!(basket.status(), BasketStatus::Open);
    assert_eq!(basket.customer_id(), Some(customer()));
    assert!(basket.lines().is_empty());
    assert_eq!(basket.currency(), None);
    assert_eq!(basket.order_id(), None);
}

#[test]
fn opening_an_open_basket_again_is_refused() {
    given(vec![opened()])
        .when(BasketCommand::Open {
            customer_id: customer(),
        })
        .then_expect_error(BasketError::AlreadyOpened);
}

#[test]
fn opening_a_checked_out_basket_again_is_refused() {
    given(vec![opened(), added(1, eur(100), 1), checked_out()])
        .when(BasketCommand::Open {
            customer_id: customer(),
        })
        .then_expect_error(BasketError::AlreadyOpened);
}

// AddItem

#[test]
fn adding_a_product_records_a_line_with_the_catalog_name_and_price() {
    given(vec![opened()])
        .when(BasketCommand::AddItem {
            product: offer(1, eur(1299)),
            quantity: 2,
        })
        .then_expect_events(vec![added(1, eur(1299), 2)]);
}

#[test]
fn the_first_line_sets_the_basket_currency() {
    let basket = replay(vec![opened(), added(1, eur(1299), 2)]);
    assert_eq!(basket.currency(), Some(eur(0).currency));
    assert_eq!(basket.lines().len(), 1);
    assert_eq!(basket.lines()[0].product_id, product(1));
    assert_eq!(basket.lines()[0].quantity, 2);
}

#[test]
fn adding_one_or_ninety_nine_units_is_allowed() {
    given(vec![opened()])
        .when(BasketCommand::AddItem {
            product: offer(1, eur(100)),
            quantity: 1,
        })
        .then_expect_events(vec![added(1, eur(100), 1)]);
    given(vec![opened()])
        .when(BasketCommand::AddItem {
            product: offer(1, eur(100)),
            quantity: MAX_QUANTITY,
        })
        .then_expect_events(vec![added(1, eur(100), 99)]);
}

#[test]
fn adding_zero_units_is_refused() {
    given(vec![opened()])
        .when(BasketCommand::AddItem {
            product: offer(1, eur(100)),
            quantity: 0,
        })
        .then_expect_error(BasketError::QuantityOutOfRange { quantity: 0 });
}

#[test]
fn adding_more_than_ninety_nine_units_is_refused() {
    given(vec![opened()])
        .when(BasketCommand::AddItem {
            product: offer(1, eur(100)),
            quantity: 100,
        })
        .then_expect_error(BasketError::QuantityOutOfRange { quantity: 100 });
    given(vec![opened()])
        .when(BasketCommand::AddItem {
            product: offer(1, eur(100)),
            quantity: u32::MAX,
        })
        .then_expect_error(BasketError::QuantityOutOfRange {
            quantity: u64::from(u32::MAX),
        });
}

#[test]
fn a_quantity_out_of_range_names_the_allowed_range_and_the_quantity() {
    let error = BasketError::QuantityOutOfRange { quantity: 100 };
    assert_eq!(
        error.to_string(),
        "quantity must be between 1 and 99, got 100"
    );
    assert_eq!(error.kind(), ErrorKind::Validation);
}

#[test]
fn adding_the_same_product_twice_increments_its_quantity() {
    given(vec![opened(), added(1, eur(100), 2)])
        .when(BasketCommand::AddItem {
            product: offer(1, eur(100)),
            quantity: 3,
        })
        .then_expect_events(vec![BasketEvent::ItemQuantityChanged {
            product_id: product(1),
            quantity: 5,
        }]);
}

#[test]
fn adding_the_same_product_twice_keeps_one_line() {
    let basket = replay(vec![
        opened(),
        added(1, eur(100), 2),
        BasketEvent::ItemQuantityChanged {
            product_id: product(1),
            quantity: 5,
        },
    ]);
    assert_eq!(basket.lines().len(), 1);
    assert_eq!(basket.lines()[0].quantity, 5);
}

#[test]
fn adding_the_same_product_up_to_ninety_nine_units_is_allowed() {
    given(vec![opened(), added(1, eur(100), 98)])
        .when(BasketCommand::AddItem {
            product: offer(1, eur(100)),
            quantity: 1,
        })
        .then_expect_events(vec![BasketEvent::ItemQuantityChanged {
            product_id: product(1),
            quantity: MAX_QUANTITY,
        }]);
}

#[test]
fn adding_the_same_product_beyond_ninety_nine_units_is_refused_naming_what_is_held() {
    let product_id = offer(1, eur(100)).product_id;
    given(vec![opened(), added(1, eur(100), 60)])
        .when(BasketCommand::AddItem {
            product: offer(1, eur(100)),
            quantity: 40,
        })
        .then_expect_error(BasketError::LineFull {
            product_id,
            held: 60,
            adding: 40,
        });
    given(vec![opened(), added(1, eur(100), MAX_QUANTITY)])
        .when(BasketCommand::AddItem {
            product: offer(1, eur(100)),
            quantity: 1,
        })
        .then_expect_error(BasketError::LineFull {
            product_id,
            held: MAX_QUANTITY,
            adding: 1,
        });
}

#[test]
fn adding_a_discontinued_product_is_refused() {
    let discontinued = ProductOffer {
        discontinued: true,
        ..offer(1, eur(100))
    };
    given(vec![opened()])
        .when(BasketCommand::AddItem {
            product: discontinued,
            quantity: 1,
        })
        .then_expect_error(BasketError::ProductDiscontinued {
            product_id: product(1),
        });
}

#[test]
fn adding_a_product_priced_above_the_highest_price_is_refused() {
    given(vec![opened()])
        .when(BasketCommand::AddItem {
            product: offer(1, eur(4_611_686_018_427_387_904)),
            quantity: 2,
        })
        .then_expect_error(BasketError::PriceOutOfRange {
            product_id: product(1),
        });
}

#[test]
fn adding_a_product_at_the_highest_price_in_the_largest_quantity_succeeds() {
    given(vec![opened()])
        .when(BasketCommand::AddItem {
            product: offer(1, eur(MAX_UNIT_PRICE_MINOR)),
            quantity: MAX_QUANTITY,
        })
        .then_expect_events(vec![added(1, eur(MAX_UNIT_PRICE_MINOR), MAX_QUANTITY)]);
}

#[test]
fn adding_more_of_a_product_discontinued_since_is_refused() {
    let discontinued = ProductOffer {
        discontinued: true,
        ..offer(1, eur(100))
    };
    given(vec![opened(), added(1, eur(100), 1)])
        .when(BasketCommand::AddItem {
            product: discontinued,
            quantity: 1,
        })
        .then_expect_error(BasketError::ProductDiscontinued {
            product_id: product(1),
        });
}

#[test]
fn adding_a_product_in_another_currency_is_refused() {
    given(vec![opened(), added(1, eur(100), 1)])
        .when(BasketCommand::AddItem {
            product: offer(2, usd(100)),
            quantity: 1,
        })
        .then_expect_error(BasketError::CurrencyMismatch {
            basket: eur(0).currency,
            product: usd(0).currency,
        });
}

#[test]
fn an_emptied_basket_accepts_another_currency() {
    given(vec![
        opened(),
        added(1, eur(100), 1),
        BasketEvent::BasketCleared {},
    ])
    .when(BasketCommand::AddItem {
        product: offer(2, usd(100)),
        quantity: 1,
    })
    .then_expect_events(vec![added(2, usd(100), 1)]);
    given(vec![
        opened(),
        added(1, eur(100), 1),
        BasketEvent::ItemRemoved {
            product_id: product(1),
        },
    ])
    .when(BasketCommand::AddItem {
        product: offer(2, usd(100)),
        quantity: 1,
    })
    .then_expect_events(vec![added(2, usd(100), 1)]);
}

#[test]
fn adding_the_fiftieth_product_is_allowed() {
    given(open_with_lines(49))
        .when(BasketCommand::AddItem {
            product: offer(50, eur(100)),
            quantity: 1,
        })
        .then_expect_events(vec![added(50, eur(100), 1)]);
}

#[test]
fn adding_a_fifty_first_product_is_refused() {
    assert_eq!(replay(open_with_lines(50)).lines().len(), MAX_LINES);
    let validator = given(open_with_lines(50)).when(BasketCommand::AddItem {
        product: offer(51, eur(100)),
        quantity: 1,
    });
    let error = validator
        .inspect_result()
        .expect_err("a full basket takes no new line");
    assert_eq!(error, BasketError::TooManyLines);
    assert_eq!(error.to_string(), "a basket holds at most 50 lines");
}

#[test]
fn adding_more_of_a_product_already_in_a_full_basket_is_allowed() {
    given(open_with_lines(50))
        .when(BasketCommand::AddItem {
            product: offer(50, eur(100)),
            quantity: 2,
        })
        .then_expect_events(vec![BasketEvent::ItemQuantityChanged {
            product_id: product(50),
            quantity: 3,
        }]);
}

#[test]
fn adding_to_a_basket_that_was_never_opened_is_refused() {
    not_opened()
        .when(BasketCommand::AddItem {
            product: offer(1, eur(100)),
            quantity: 1,
        })
        .then_expect_error(BasketError::NotOpened);
}

// ChangeQuantity

#[test]
fn changing_the_quantity_of_a_line_records_the_new_quantity() {
    given(vec![opened(), added(1, eur(100), 2)])
        .when(BasketCommand::ChangeQuantity {
            product_id: product(1),
            quantity: 7,
        })
        .then_expect_events(vec![BasketEvent::ItemQuantityChanged {
            product_id: product(1),
            quantity: 7,
        }]);
}

#[test]
fn a_changed_quantity_replaces_the_old_one_on_that_line_only() {
    let basket = replay(vec![
        opened(),
        added(1, eur(100), 2),
        added(2, eur(250), 4),
        BasketEvent::ItemQuantityChanged {
            product_id: product(1),
            quantity: 7,
        },
    ]);
    let quantities: Vec<_> = basket
        .lines()
        .iter()
        .map(|l| (l.product_id, l.quantity))
        .collect();
    assert_eq!(quantities, vec![(product(1), 7), (product(2), 4)]);
}

#[test]
fn changing_to_the_current_quantity_records_nothing() {
    given(vec![opened(), added(1, eur(100), 2)])
        .when(BasketCommand::ChangeQuantity {
            product_id: product(1),
            quantity: 2,
        })
        .then_expect_events(vec![]);
}

#[test]
fn changing_to_ninety_nine_units_is_allowed() {
    given(vec![opened(), added(1, eur(100), 2)])
        .when(BasketCommand::ChangeQuantity {
            product_id: product(1),
            quantity: MAX_QUANTITY,
        })
        .then_expect_events(vec![BasketEvent::ItemQuantityChanged {
            product_id: product(1),
            quantity: 99,
        }]);
}

#[test]
fn changing_to_zero_units_is_refused() {
    given(vec![opened(), added(1, eur(100), 2)])
        .when(BasketCommand::ChangeQuantity {
            product_id: product(1),
            quantity: 0,
        })
        .then_expect_error(BasketError::QuantityOutOfRange { quantity: 0 });
}

#[test]
fn changing_to_more_than_ninety_nine_units_is_refused() {
    given(vec![opened(), added(1, eur(100), 2)])
        .when(BasketCommand::ChangeQuantity {
            product_id: product(1),
            quantity: 100,
        })
        .then_expect_error(BasketError::QuantityOutOfRange { quantity: 100 });
}

#[test]
fn changing_the_quantity_of_a_product_not_in_the_basket_is_refused() {
    given(vec![opened(), added(1, eur(100), 2)])
        .when(BasketCommand::ChangeQuantity {
            product_id: product(2),
            quantity: 3,
        })
        .then_expect_error(BasketError::ItemNotInBasket {
            product_id: product(2),
        });
}

#[test]
fn changing_a_quantity_in_a_basket_that_was_never_opened_is_refused() {
    not_opened()
        .when(BasketCommand::ChangeQuantity {
            product_id: product(1),
            quantity: 3,
        })
        .then_expect_error(BasketError::NotOpened);
}

// RemoveItem

#[test]
fn removing_a_line_records_it() {
    given(vec![opened(), added(1, eur(100), 2), added(2, eur(250), 1)])
        .when(BasketCommand::RemoveItem {
            product_id: product(1),
        })
        .then_expect_events(vec![BasketEvent::ItemRemoved {
            product_id: product(1),
        }]);
}

#[test]
fn removing_a_line_keeps_the_other_lines() {
    let basket = replay(vec![
        opened(),
        added(1, eur(100), 2),
        added(2, eur(250), 1),
        BasketEvent::ItemRemoved {
            product_id: product(1),
        },
    ]);
    let products: Vec<_> = basket.lines().iter().map(|l| l.product_id).collect();
    assert_eq!(products, vec![product(2)]);
}

#[test]
fn removing_a_product_not_in_the_basket_is_refused() {
    given(vec![opened(), added(1, eur(100), 2)])
        .when(BasketCommand::RemoveItem {
            product_id: product(2),
        })
        .then_expect_error(BasketError::ItemNotInBasket {
            product_id: product(2),
        });
}

#[test]
fn removing_a_product_twice_is_refused() {
    given(vec![
        opened(),
        added(1, eur(100), 2),
        BasketEvent::ItemRemoved {
            product_id: product(1),
        },
    ])
    .when(BasketCommand::RemoveItem {
        product_id: product(1),
    })
    .then_expect_error(BasketError::ItemNotInBasket {
        product_id: product(1),
    });
}

#[test]
fn removing_from_a_basket_that_was_never_opened_is_refused() {
    not_opened()
        .when(BasketCommand::RemoveItem {
            product_id: product(1),
        })
        .then_expect_error(BasketError::NotOpened);
}

// Clear

#[test]
fn clearing_a_basket_with_lines_records_it() {
    given(vec![opened(), added(1, eur(100), 2), added(2, eur(250), 1)])
        .when(BasketCommand::Clear)
        .then_expect_events(vec![BasketEvent::BasketCleared {}]);
}

#[test]
fn a_cleared_basket_is_open_empty_and_has_no_currency() {
    let basket = replay(vec![
        opened(),
        added(1, eur(100), 2),
        BasketEvent::BasketCleared {},
    ]);
    assert_eq!(basket.status(), BasketStatus::Open);
    assert!(basket.lines().is_empty());
    assert_eq!(basket.currency(), None);
}

#[test]
fn clearing_an_empty_basket_records_nothing() {
    given(vec![opened()])
        .when(BasketCommand::Clear)
        .then_expect_events(vec![]);
}

#[test]
fn clearing_a_basket_that_was_never_opened_is_refused() {
    not_opened()
        .when(BasketCommand::Clear)
        .then_expect_error(BasketError::NotOpened);
}

// CheckOut

#[test]
fn checking_out_records_the_order_placed() {
    given(vec![opened(), added(1, eur(100), 2)])
        .when(BasketCommand::CheckOut { order_id: order() })
        .then_expect_events(vec![checked_out()]);
}

#[test]
fn a_checked_out_basket_keeps_its_lines_and_knows_its_order() {
    let basket = replay(vec![opened(), added(1, eur(100), 2), checked_out()]);
    assert_eq!(basket.status(), BasketStatus::CheckedOut);
    assert_eq!(basket.order_id(), Some(order()));
    assert_eq!(basket.lines().len(), 1);
}

#[test]
fn checking_out_an_empty_basket_is_refused() {
    given(vec![opened()])
        .when(BasketCommand::CheckOut { order_id: order() })
        .then_expect_error(BasketError::Empty);
}

#[test]
fn checking_out_a_cleared_basket_is_refused() {
    given(vec![
        opened(),
        added(1, eur(100), 2),
        BasketEvent::BasketCleared {},
    ])
    .when(BasketCommand::CheckOut { order_id: order() })
    .then_expect_error(BasketError::Empty);
}

#[test]
fn checking_out_a_basket_that_was_never_opened_is_refused() {
    not_opened()
        .when(BasketCommand::CheckOut { order_id: order() })
        .then_expect_error(BasketError::NotOpened);
}

// Lifecycle

#[test]
fn a_basket_that_was_never_opened_refuses_every_change() {
    for command in every_change() {
        not_opened()
            .when(command)
            .then_expect_error(BasketError::NotOpened);
    }
    assert_eq!(BasketError::NotOpened.kind(), ErrorKind::NotFound);
}

#[test]
fn a_checked_out_basket_refuses_every_further_change_naming_its_state() {
    for command in every_change() {
        given(vec![opened(), added(1, eur(100), 2), checked_out()])
            .when(command)
            .then_expect_error(BasketError::NotOpen {
                status: BasketStatus::CheckedOut,
            });
    }
}

#[test]
fn a_checked_out_basket_refuses_even_invalid_changes_by_its_state() {
    let validator = given(vec![opened(), added(1, eur(100), 2), checked_out()]).when(
        BasketCommand::ChangeQuantity {
            product_id: product(9),
            quantity: 0,
        },
    );
    let error = validator
        .inspect_result()
        .expect_err("a checked-out basket is closed");
    assert_eq!(
        error,
        BasketError::NotOpen {
            status: BasketStatus::CheckedOut
        }
    );
    assert_eq!(
        error.to_string(),
        "basket is checked out and accepts no further change"
    );
    assert_eq!(error.kind(), ErrorKind::InvalidState);
}

/// The serialized state, as the state cache keeps it under
/// `Basket::STATE_FORMAT`. When this test fails, the shape changed: bump
/// `STATE_FORMAT` and update the expected JSON.
#[test]
fn the_state_keeps_its_format() {
    let mut basket = Basket::default();
    basket.apply(opened());
    basket.apply(BasketEvent::ItemAdded {
        product_id: product(1),
        sku: sku(1),
        name: name(1),
        unit_price: eur(1299),
        quantity: 2,
    });
    let state = serde_json::to_value(&basket).expect("a basket serialises");
    assert_eq!(Basket::STATE_FORMAT, 1, "bumped: update the JSON below too");
    assert_eq!(
        state,
        serde_json::json!({
            "status": "open",
            "customer_id": "00000000-0000-0000-0000-000000c0ffee",
            "lines": [{
                "product_id": "00000000-0000-0000-0000-000000000001",
                "sku": "SKU-1",
                "name": "Product 1",
                "unit_price": {"amount_minor": 1299, "currency": "EUR"},
                "quantity": 2
            }],
            "order_id": null
        })
    );
    let back: Basket = serde_json::from_value(state).expect("and reads back");
    assert_eq!(back, basket);
}
