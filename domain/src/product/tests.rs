//! Given/when/then tests of the Product aggregate: every command, and every
//! rejection a command can produce.

use cqrs_es::Aggregate;
use cqrs_es::test::{AggregateTestExecutor, TestFramework};
use uuid::Uuid;

use crate::error::ErrorKind;
use crate::ids::OrderId;
use crate::money::{MAX_UNIT_PRICE_MINOR, Money};
use crate::text::{Description, ProductName, ShortText, Sku};

use super::{Product, ProductCommand, ProductError, ProductEvent, ProductStatus};

fn eur(minor: i64) -> Money {
    Money::new(minor, "EUR".parse().expect("EUR is ISO 4217"))
}

fn usd(minor: i64) -> Money {
    Money::new(minor, "USD".parse().expect("USD is ISO 4217"))
}

fn sku(raw: &str) -> Sku {
    Sku::parse(raw).expect("valid SKU")
}

fn name(raw: &str) -> ProductName {
    ProductName::parse(raw).expect("valid product name")
}

fn description(raw: &str) -> Description {
    Description::parse(raw).expect("valid description")
}

fn reason(raw: &str) -> ShortText {
    ShortText::parse(raw).expect("valid reason")
}

fn order(n: u128) -> OrderId {
    OrderId::from_uuid(Uuid::from_u128(n))
}

fn registration(price: Money, initial_stock: u32) -> ProductCommand {
    ProductCommand::Register {
        sku: sku("MUG-01"),
        name: name("Coffee mug"),
        description: description("A mug for coffee."),
        price,
        initial_stock,
    }
}

fn registered(price: Money, initial_stock: u32) -> ProductEvent {
    ProductEvent::ProductRegistered {
        sku: sku("MUG-01"),
        name: name("Coffee mug"),
        description: description("A mug for coffee."),
        price,
        initial_stock,
    }
}

fn reserved(order_id: OrderId, quantity: u32) -> ProductEvent {
    ProductEvent::StockReserved { order_id, quantity }
}

fn given(events: Vec<ProductEvent>) -> AggregateTestExecutor<Product> {
    TestFramework::<Product>::with(()).given(events)
}

fn unregistered() -> AggregateTestExecutor<Product> {
    TestFramework::<Product>::with(()).given_no_previous_events()
}

fn replay(events: Vec<ProductEvent>) -> Product {
    let mut product = Product::default();
    for event in events {
        product.apply(event);
    }
    product
}

// Register

#[test]
fn registering_a_new_product_records_its_details_and_initial_stock() {
    unregistered()
        .when(registration(eur(1299), 10))
        .then_expect_events(vec![registered(eur(1299), 10)]);
}

#[test]
fn a_registered_product_is_active_with_all_its_stock_available() {
    let product = replay(vec![registered(eur(1299), 10)]);
    assert_eq!(product.status(), ProductStatus::Active);
    assert_eq!(product.details().map(|d| d.price), Some(eur(1299)));
    assert_eq!(product.details().map(|d| d.sku.as_str()), Some("MUG-01"));
    assert_eq!(
        (product.on_hand(), product.reserved(), product.available()),
        (10, 0, 10)
    );
}

#[test]
fn registering_a_free_product_without_stock_is_allowed() {
    unregistered()
        .when(registration(eur(0), 0))
        .then_expect_events(vec![registered(eur(0), 0)]);
}

#[test]
fn registering_an_already_registered_product_is_refused() {
    given(vec![registered(eur(1299), 10)])
        .when(registration(eur(999), 5))
        .then_expect_error(ProductError::AlreadyRegistered);
}

#[test]
fn registering_a_discontinued_product_again_is_refused() {
    given(vec![
        registered(eur(1299), 10),
        ProductEvent::ProductDiscontinued {},
    ])
    .when(registration(eur(1299), 10))
    .then_expect_error(ProductError::AlreadyRegistered);
}

#[test]
fn registering_with_a_negative_price_is_refused() {
    unregistered()
        .when(registration(eur(-1), 10))
        .then_expect_error(ProductError::NegativePrice);
}

// ChangePrice

#[test]
fn changing_the_price_records_the_old_and_the_new_price() {
    given(vec![registered(eur(1299), 10)])
        .when(ProductCommand::ChangePrice { price: eur(1499) })
        .then_expect_events(vec![ProductEvent::PriceChanged {
            old_price: eur(1299),
            new_price: eur(1499),
        }]);
}

#[test]
fn changing_the_price_to_zero_is_allowed() {
    given(vec![registered(eur(1299), 10)])
        .when(ProductCommand::ChangePrice { price: eur(0) })
        .then_expect_events(vec![ProductEvent::PriceChanged {
            old_price: eur(1299),
            new_price: eur(0),
        }]);
}

#[test]
fn a_changed_price_is_the_one_the_next_change_starts_from() {
    let history = vec![
        registered(eur(1299), 10),
        ProductEvent::PriceChanged {
            old_price: eur(1299),
            new_price: eur(1499),
        },
    ];
    assert_eq!(
        replay(history.clone()).details().map(|d| d.price),
        Some(eur(1499))
    );
    given(history.clone())
        .when(ProductCommand::ChangePrice { price: eur(1499) })
        .then_expect_error(ProductError::PriceUnchanged);
    given(history)
        .when(ProductCommand::ChangePrice { price: eur(1299) })
        .then_expect_events(vec![ProductEvent::PriceChanged {
            old_price: eur(1499),
            new_price: eur(1299),
        }]);
}

#[test]
fn changing_the_price_of_an_unregistered_product_is_refused() {
    unregistered()
        .when(ProductCommand::ChangePrice { price: eur(1499) })
        .then_expect_error(ProductError::NotRegistered);
}

#[test]
fn changing_the_price_of_a_discontinued_product_is_refused_naming_its_status() {
    given(vec![
        registered(eur(1299), 10),
        ProductEvent::ProductDiscontinued {},
    ])
    .when(ProductCommand::ChangePrice { price: eur(1499) })
    .then_expect_error(ProductError::Discontinued {
        status: ProductStatus::Discontinued,
    });
}

#[test]
fn changing_the_price_to_another_currency_is_refused() {
    given(vec![registered(eur(1299), 10)])
        .when(ProductCommand::ChangePrice { price: usd(1499) })
        .then_expect_error(ProductError::CurrencyMismatch {
            expected: eur(0).currency,
            got: usd(0).currency,
        });
}

#[test]
fn registering_at_the_highest_price_succeeds() {
    unregistered()
        .when(registration(eur(MAX_UNIT_PRICE_MINOR), 10))
        .then_expect_events(vec![registered(eur(MAX_UNIT_PRICE_MINOR), 10)]);
}

#[test]
fn registering_above_the_highest_price_is_refused() {
    unregistered()
        .when(registration(eur(MAX_UNIT_PRICE_MINOR + 1), 10))
        .then_expect_error(ProductError::PriceTooHigh {
            max: MAX_UNIT_PRICE_MINOR,
        });
}

#[test]
fn changing_the_price_above_the_highest_price_is_refused() {
    given(vec![registered(eur(1299), 10)])
        .when(ProductCommand::ChangePrice {
            price: eur(4_611_686_018_427_387_904),
        })
        .then_expect_error(ProductError::PriceTooHigh {
            max: MAX_UNIT_PRICE_MINOR,
        });
}

#[test]
fn changing_to_a_negative_price_is_refused() {
    given(vec![registered(eur(1299), 10)])
        .when(ProductCommand::ChangePrice { price: eur(-1) })
        .then_expect_error(ProductError::NegativePrice);
}

#[test]
fn changing_to_the_current_price_is_refused() {
    given(vec![registered(eur(1299), 10)])
        .when(ProductCommand::ChangePrice { price: eur(1299) })
        .then_expect_error(ProductError::PriceUnchanged);
}

// AdjustStock

#[test]
fn adding_stock_records_the_delta_and_the_new_stock_on_hand() {
    given(vec![registered(eur(1299), 10)])
        .when(ProductCommand::AdjustStock {
            delta: 5,
            reason: reason("delivery"),
        })
        .then_expect_events(vec![ProductEvent::StockAdjusted {
            delta: 5,
            reason: reason("delivery"),
            on_hand: 15,
        }]);
}

#[test]
fn removing_stock_records_the_delta_and_the_new_stock_on_hand() {
    given(vec![registered(eur(1299), 10)])
        .when(ProductCommand::AdjustStock {
            delta: -4,
            reason: reason("stock count"),
        })
        .then_expect_events(vec![ProductEvent::StockAdjusted {
            delta: -4,
            reason: reason("stock count"),
            on_hand: 6,
        }]);
}

#[test]
fn removing_all_unreserved_stock_is_allowed() {
    given(vec![registered(eur(1299), 10), reserved(order(1), 8)])
        .when(ProductCommand::AdjustStock {
            delta: -2,
            reason: reason("broken"),
        })
        .then_expect_events(vec![ProductEvent::StockAdjusted {
            delta: -2,
            reason: reason("broken"),
            on_hand: 8,
        }]);
}

#[test]
fn adjusting_the_stock_of_a_discontinued_product_is_allowed() {
    given(vec![
        registered(eur(1299), 10),
        ProductEvent::ProductDiscontinued {},
    ])
    .when(ProductCommand::AdjustStock {
        delta: -10,
        reason: reason("write-off"),
    })
    .then_expect_events(vec![ProductEvent::StockAdjusted {
        delta: -10,
        reason: reason("write-off"),
        on_hand: 0,
    }]);
}

#[test]
fn an_adjustment_sets_the_stock_on_hand() {
    let product = replay(vec![
        registered(eur(1299), 10),
        reserved(order(1), 3),
        ProductEvent::StockAdjusted {
            delta: 5,
            reason: reason("delivery"),
            on_hand: 15,
        },
    ]);
    assert_eq!(
        (product.on_hand(), product.reserved(), product.available()),
        (15, 3, 12)
    );
}

#[test]
fn adjusting_the_stock_of_an_unregistered_product_is_refused() {
    unregistered()
        .when(ProductCommand::AdjustStock {
            delta: 5,
            reason: reason("delivery"),
        })
        .then_expect_error(ProductError::NotRegistered);
}

#[test]
fn a_zero_stock_adjustment_is_refused() {
    given(vec![registered(eur(1299), 10)])
        .when(ProductCommand::AdjustStock {
            delta: 0,
            reason: reason("nothing"),
        })
        .then_expect_error(ProductError::ZeroAdjustment);
}

#[test]
fn removing_reserved_stock_is_refused() {
    given(vec![registered(eur(1299), 10), reserved(order(1), 8)])
        .when(ProductCommand::AdjustStock {
            delta: -3,
            reason: reason("broken"),
        })
        .then_expect_error(ProductError::StockBelowReserved {
            on_hand: 7,
            reserved: 8,
        });
}

#[test]
fn removing_more_than_is_on_hand_is_refused() {
    given(vec![registered(eur(1299), 10)])
        .when(ProductCommand::AdjustStock {
            delta: -11,
            reason: reason("stock count"),
        })
        .then_expect_error(ProductError::StockBelowReserved {
            on_hand: -1,
            reserved: 0,
        });
}

#[test]
fn the_most_negative_adjustment_is_refused_without_overflowing() {
    given(vec![registered(eur(1299), 10)])
        .when(ProductCommand::AdjustStock {
            delta: i64::MIN,
            reason: reason("typo"),
        })
        .then_expect_error(ProductError::StockBelowReserved {
            on_hand: i64::MIN + 10,
            reserved: 0,
        });
}

#[test]
fn stock_below_reserved_names_the_stock_left_and_the_units_reserved() {
    let error = ProductError::StockBelowReserved {
        on_hand: 7,
        reserved: 8,
    };
    assert_eq!(
        error.to_string(),
        "adjustment would leave 7 on hand, below the 8 units reserved"
    );
    assert_eq!(error.kind(), ErrorKind::InvalidState);
}

#[test]
fn adding_stock_above_the_largest_count_is_refused() {
    given(vec![registered(eur(1299), u32::MAX)])
        .when(ProductCommand::AdjustStock {
            delta: 1,
            reason: reason("delivery"),
        })
        .then_expect_error(ProductError::StockOverflow { max: u32::MAX });
}

#[test]
fn the_largest_adjustment_is_refused_without_overflowing() {
    given(vec![registered(eur(1299), 10)])
        .when(ProductCommand::AdjustStock {
            delta: i64::MAX,
            reason: reason("typo"),
        })
        .then_expect_error(ProductError::StockOverflow { max: u32::MAX });
}

// Discontinue

#[test]
fn discontinuing_an_active_product_takes_it_off_sale() {
    given(vec![registered(eur(1299), 10)])
        .when(ProductCommand::Discontinue)
        .then_expect_events(vec![ProductEvent::ProductDiscontinued {}]);
    let product = replay(vec![
        registered(eur(1299), 10),
        ProductEvent::ProductDiscontinued {},
    ]);
    assert_eq!(product.status(), ProductStatus::Discontinued);
}

#[test]
fn discontinuing_an_unregistered_product_is_refused() {
    unregistered()
        .when(ProductCommand::Discontinue)
        .then_expect_error(ProductError::NotRegistered);
}

#[test]
fn discontinuing_a_discontinued_product_is_refused_naming_its_status() {
    let validator = given(vec![
        registered(eur(1299), 10),
        ProductEvent::ProductDiscontinued {},
    ])
    .when(ProductCommand::Discontinue);
    let error = validator
        .inspect_result()
        .expect_err("a second discontinuation is refused");
    assert_eq!(
        error,
        ProductError::Discontinued {
            status: ProductStatus::Discontinued
        }
    );
    assert_eq!(error.to_string(), "product is discontinued");
}

// Reserve

#[test]
fn reserving_available_stock_sets_it_aside_for_the_order() {
    given(vec![registered(eur(1299), 10)])
        .when(ProductCommand::Reserve {
            order_id: order(1),
            quantity: 4,
        })
        .then_expect_events(vec![reserved(order(1), 4)]);
}

#[test]
fn reserving_all_available_stock_is_allowed() {
    given(vec![registered(eur(1299), 10), reserved(order(1), 4)])
        .when(ProductCommand::Reserve {
            order_id: order(2),
            quantity: 6,
        })
        .then_expect_events(vec![reserved(order(2), 6)]);
}

#[test]
fn reservations_reduce_the_available_stock_but_not_the_stock_on_hand() {
    let product = replay(vec![
        registered(eur(1299), 10),
        reserved(order(1), 4),
        reserved(order(2), 6),
    ]);
    assert_eq!(
        (product.on_hand(), product.reserved(), product.available()),
        (10, 10, 0)
    );
}

#[test]
fn reserving_more_than_available_is_refused() {
    given(vec![registered(eur(1299), 10), reserved(order(1), 4)])
        .when(ProductCommand::Reserve {
            order_id: order(2),
            quantity: 7,
        })
        .then_expect_error(ProductError::InsufficientStock {
            requested: 7,
            available: 6,
        });
}

#[test]
fn reserving_when_nothing_is_available_is_refused() {
    let validator = given(vec![registered(eur(1299), 10), reserved(order(1), 10)]).when(
        ProductCommand::Reserve {
            order_id: order(2),
            quantity: 1,
        },
    );
    let error = validator.inspect_result().expect_err("no stock is left");
    assert_eq!(
        error,
        ProductError::InsufficientStock {
            requested: 1,
            available: 0
        }
    );
    assert_eq!(
        error.to_string(),
        "insufficient stock: 1 requested, 0 available"
    );
}

#[test]
fn reserving_zero_units_is_refused() {
    given(vec![registered(eur(1299), 10)])
        .when(ProductCommand::Reserve {
            order_id: order(1),
            quantity: 0,
        })
        .then_expect_error(ProductError::ZeroQuantity);
}

#[test]
fn reserving_twice_for_the_same_order_is_refused() {
    given(vec![registered(eur(1299), 10), reserved(order(1), 2)])
        .when(ProductCommand::Reserve {
            order_id: order(1),
            quantity: 1,
        })
        .then_expect_error(ProductError::AlreadyReserved { order_id: order(1) });
}

#[test]
fn reserving_an_unregistered_product_is_refused() {
    unregistered()
        .when(ProductCommand::Reserve {
            order_id: order(1),
            quantity: 1,
        })
        .then_expect_error(ProductError::NotRegistered);
}

#[test]
fn reserving_a_discontinued_product_is_refused_naming_its_status() {
    given(vec![
        registered(eur(1299), 10),
        ProductEvent::ProductDiscontinued {},
    ])
    .when(ProductCommand::Reserve {
        order_id: order(1),
        quantity: 1,
    })
    .then_expect_error(ProductError::Discontinued {
        status: ProductStatus::Discontinued,
    });
}

// Release

#[test]
fn releasing_a_reservation_gives_back_all_its_units() {
    given(vec![
        registered(eur(1299), 10),
        reserved(order(1), 4),
        reserved(order(2), 3),
    ])
    .when(ProductCommand::Release { order_id: order(1) })
    .then_expect_events(vec![ProductEvent::StockReleased {
        order_id: order(1),
        quantity: 4,
    }]);
}

#[test]
fn released_units_are_available_again() {
    let history = vec![
        registered(eur(1299), 5),
        reserved(order(1), 5),
        ProductEvent::StockReleased {
            order_id: order(1),
            quantity: 5,
        },
    ];
    let product = replay(history.clone());
    assert_eq!(
        (product.on_hand(), product.reserved(), product.available()),
        (5, 0, 5)
    );
    given(history)
        .when(ProductCommand::Reserve {
            order_id: order(2),
            quantity: 5,
        })
        .then_expect_events(vec![reserved(order(2), 5)]);
}

#[test]
fn releasing_the_reservation_of_a_discontinued_product_is_allowed() {
    given(vec![
        registered(eur(1299), 10),
        reserved(order(1), 4),
        ProductEvent::ProductDiscontinued {},
    ])
    .when(ProductCommand::Release { order_id: order(1) })
    .then_expect_events(vec![ProductEvent::StockReleased {
        order_id: order(1),
        quantity: 4,
    }]);
}

#[test]
fn releasing_for_an_order_without_a_reservation_is_refused() {
    given(vec![registered(eur(1299), 10), reserved(order(1), 4)])
        .when(ProductCommand::Release { order_id: order(2) })
        .then_expect_error(ProductError::NoReservation { order_id: order(2) });
}

#[test]
fn releasing_the_same_reservation_twice_is_refused() {
    given(vec![
        registered(eur(1299), 10),
        reserved(order(1), 4),
        ProductEvent::StockReleased {
            order_id: order(1),
            quantity: 4,
        },
    ])
    .when(ProductCommand::Release { order_id: order(1) })
    .then_expect_error(ProductError::NoReservation { order_id: order(1) });
}

#[test]
fn releasing_on_an_unregistered_product_is_refused() {
    unregistered()
        .when(ProductCommand::Release { order_id: order(1) })
        .then_expect_error(ProductError::NotRegistered);
}

// ShipReserved

#[test]
fn shipping_reserved_stock_takes_all_the_order_units_out() {
    given(vec![
        registered(eur(1299), 10),
        reserved(order(1), 4),
        reserved(order(2), 3),
    ])
    .when(ProductCommand::ShipReserved { order_id: order(2) })
    .then_expect_events(vec![ProductEvent::ReservedStockShipped {
        order_id: order(2),
        quantity: 3,
    }]);
}

#[test]
fn shipped_units_leave_the_stock_on_hand_and_the_reservations_without_changing_availability() {
    let product = replay(vec![
        registered(eur(1299), 10),
        reserved(order(1), 4),
        reserved(order(2), 3),
        ProductEvent::ReservedStockShipped {
            order_id: order(2),
            quantity: 3,
        },
    ]);
    assert_eq!(
        (product.on_hand(), product.reserved(), product.available()),
        (7, 4, 3)
    );
}

#[test]
fn shipping_the_reservation_of_a_discontinued_product_is_allowed() {
    given(vec![
        registered(eur(1299), 10),
        reserved(order(1), 4),
        ProductEvent::ProductDiscontinued {},
    ])
    .when(ProductCommand::ShipReserved { order_id: order(1) })
    .then_expect_events(vec![ProductEvent::ReservedStockShipped {
        order_id: order(1),
        quantity: 4,
    }]);
}

#[test]
fn shipping_for_an_order_without_a_reservation_is_refused() {
    given(vec![registered(eur(1299), 10)])
        .when(ProductCommand::ShipReserved { order_id: order(1) })
        .then_expect_error(ProductError::NoReservation { order_id: order(1) });
}

#[test]
fn shipping_the_same_reservation_twice_is_refused() {
    given(vec![
        registered(eur(1299), 10),
        reserved(order(1), 4),
        ProductEvent::ReservedStockShipped {
            order_id: order(1),
            quantity: 4,
        },
    ])
    .when(ProductCommand::ShipReserved { order_id: order(1) })
    .then_expect_error(ProductError::NoReservation { order_id: order(1) });
}

#[test]
fn shipping_a_released_reservation_is_refused() {
    given(vec![
        registered(eur(1299), 10),
        reserved(order(1), 4),
        ProductEvent::StockReleased {
            order_id: order(1),
            quantity: 4,
        },
    ])
    .when(ProductCommand::ShipReserved { order_id: order(1) })
    .then_expect_error(ProductError::NoReservation { order_id: order(1) });
}

#[test]
fn shipping_on_an_unregistered_product_is_refused() {
    unregistered()
        .when(ProductCommand::ShipReserved { order_id: order(1) })
        .then_expect_error(ProductError::NotRegistered);
}

// Invariant: available stock never goes below zero

#[test]
fn available_stock_never_goes_below_zero_through_any_accepted_command() {
    let commands = vec![
        ProductCommand::Reserve {
            order_id: order(1),
            quantity: 6,
        },
        ProductCommand::Reserve {
            order_id: order(2),
            quantity: 5,
        },
        ProductCommand::Reserve {
            order_id: order(2),
            quantity: 4,
        },
        ProductCommand::AdjustStock {
            delta: -1,
            reason: reason("broken"),
        },
        ProductCommand::AdjustStock {
            delta: -1,
            reason: reason("broken"),
        },
        ProductCommand::ShipReserved { order_id: order(1) },
        ProductCommand::Reserve {
            order_id: order(3),
            quantity: 1,
        },
        ProductCommand::AdjustStock {
            delta: -4,
            reason: reason("stock count"),
        },
        ProductCommand::Release { order_id: order(2) },
        ProductCommand::AdjustStock {
            delta: -4,
            reason: reason("stock count"),
        },
    ];
    let mut history = vec![registered(eur(1299), 10)];
    for command in commands {
        if let Ok(events) = given(history.clone()).when(command).inspect_result() {
            history.extend(events);
        }
        let product = replay(history.clone());
        assert!(product.reserved() <= product.on_hand(), "{product:?}");
        assert_eq!(product.available(), product.on_hand() - product.reserved());
    }
    let product = replay(history);
    assert_eq!(
        (product.on_hand(), product.reserved(), product.available()),
        (0, 0, 0)
    );
}
