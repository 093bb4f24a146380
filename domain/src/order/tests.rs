//! Given/when/then tests of the Order aggregate: every command, and every
//! rejection a command can produce.

use cqrs_es::Aggregate;
use cqrs_es::test::{AggregateTestExecutor, TestFramework};
use uuid::Uuid;

use crate::basket::{MAX_LINES, MAX_QUANTITY};
use crate::error::ErrorKind;
use crate::ids::{BasketId, CustomerId, ProductId};
use crate::money::{MAX_UNIT_PRICE_MINOR, Money, MoneyError};
use crate::text::{CountryCode, ProductName, ShortText, Sku};

use super::{
    MAX_ORDER_TOTAL_MINOR, Order, OrderCommand, OrderError, OrderEvent, OrderLine, OrderStatus,
    ShippingAddress,
};

fn eur(minor: i64) -> Money {
    Money::new(minor, "EUR".parse().expect("EUR is ISO 4217"))
}

fn usd(minor: i64) -> Money {
    Money::new(minor, "USD".parse().expect("USD is ISO 4217"))
}

fn text(raw: &str) -> ShortText {
    ShortText::parse(raw).expect("valid short text")
}

fn customer() -> CustomerId {
    CustomerId::from_uuid(Uuid::from_u128(0xC0FFEE))
}

fn basket() -> BasketId {
    BasketId::from_uuid(Uuid::from_u128(0xBA5E))
}

fn line(n: u128, unit_price: Money, quantity: u32) -> OrderLine {
    OrderLine {
        product_id: ProductId::from_uuid(Uuid::from_u128(n)),
        sku: Sku::parse(&format!("SKU-{n}")).expect("valid SKU"),
        name: ProductName::parse(&format!("Product {n}")).expect("valid product name"),
        unit_price,
        quantity,
    }
}

fn address() -> ShippingAddress {
    ShippingAddress {
        recipient: text("Erika Mustermann"),
        line1: text("Heidestrasse 17"),
        line2: None,
        city: text("Köln"),
        postal_code: text("51147"),
        country: CountryCode::parse("de").expect("valid country code"),
    }
}

/// Two mugs at 12.99 and a spoon at 5.00: 30.98 EUR.
fn two_lines() -> Vec<OrderLine> {
    vec![line(1, eur(1299), 2), line(2, eur(500), 1)]
}

fn place(lines: Vec<OrderLine>) -> OrderCommand {
    OrderCommand::Place {
        customer_id: customer(),
        basket_id: basket(),
        lines,
        shipping_address: address(),
    }
}

fn placed() -> OrderEvent {
    OrderEvent::OrderPlaced {
        customer_id: customer(),
        basket_id: basket(),
        lines: two_lines(),
        total: eur(3098),
        shipping_address: address(),
    }
}

fn paid() -> OrderEvent {
    OrderEvent::OrderPaid {
        payment_reference: text("PAY-1"),
        amount: eur(3098),
    }
}

fn shipped() -> OrderEvent {
    OrderEvent::OrderShipped {
        tracking_number: text("TRACK-1"),
    }
}

fn cancelled() -> OrderEvent {
    OrderEvent::OrderCancelled {
        reason: text("changed my mind"),
    }
}

/// The events that bring an order to `status`.
fn history(status: OrderStatus) -> Vec<OrderEvent> {
    match status {
        OrderStatus::NotPlaced => vec![],
        OrderStatus::Placed => vec![placed()],
        OrderStatus::Paid => vec![placed(), paid()],
        OrderStatus::Shipped => vec![placed(), paid(), shipped()],
        OrderStatus::Delivered => vec![placed(), paid(), shipped(), OrderEvent::OrderDelivered {}],
        OrderStatus::Cancelled => vec![placed(), cancelled()],
    }
}

const PLACED_STATUSES: [OrderStatus; 5] = [
    OrderStatus::Placed,
    OrderStatus::Paid,
    OrderStatus::Shipped,
    OrderStatus::Delivered,
    OrderStatus::Cancelled,
];

fn given(events: Vec<OrderEvent>) -> AggregateTestExecutor<Order> {
    TestFramework::<Order>::with(()).given(events)
}

fn not_placed() -> AggregateTestExecutor<Order> {
    TestFramework::<Order>::with(()).given_no_previous_events()
}

fn replay(events: Vec<OrderEvent>) -> Order {
    let mut order = Order::default();
    for event in events {
        order.apply(event);
    }
    order
}

fn pay(amount: Money) -> OrderCommand {
    OrderCommand::Pay {
        payment_reference: text("PAY-1"),
        amount,
    }
}

fn ship() -> OrderCommand {
    OrderCommand::Ship {
        tracking_number: text("TRACK-1"),
    }
}

fn cancel() -> OrderCommand {
    OrderCommand::Cancel {
        reason: text("changed my mind"),
    }
}

// Place

#[test]
fn placing_an_order_records_its_lines_address_and_total() {
    not_placed()
        .when(place(two_lines()))
        .then_expect_events(vec![placed()]);
}

#[test]
fn a_placed_order_knows_its_customer_lines_and_total() {
    let order = replay(vec![placed()]);
    assert_eq!(order.status(), OrderStatus::Placed);
    assert_eq!(order.customer_id(), Some(customer()));
    assert_eq!(order.lines(), two_lines().as_slice());
    assert_eq!(order.total(), Some(eur(3098)));
}

#[test]
fn free_lines_add_nothing_to_the_total() {
    not_placed()
        .when(place(vec![line(1, eur(0), 3)]))
        .then_expect_events(vec![OrderEvent::OrderPlaced {
            customer_id: customer(),
            basket_id: basket(),
            lines: vec![line(1, eur(0), 3)],
            total: eur(0),
            shipping_address: address(),
        }]);
}

#[test]
fn placing_an_order_that_exists_is_refused_whatever_its_status() {
    for status in PLACED_STATUSES {
        given(history(status))
            .when(place(two_lines()))
            .then_expect_error(OrderError::AlreadyPlaced);
    }
}

#[test]
fn placing_an_order_without_lines_is_refused() {
    not_placed()
        .when(place(vec![]))
        .then_expect_error(OrderError::NoLines);
}

#[test]
fn placing_an_order_with_a_zero_quantity_line_is_refused() {
    not_placed()
        .when(place(vec![line(1, eur(1299), 2), line(2, eur(500), 0)]))
        .then_expect_error(OrderError::ZeroQuantity);
}

#[test]
fn placing_an_order_with_lines_in_different_currencies_is_refused() {
    let validator = not_placed().when(place(vec![line(1, eur(1299), 2), line(2, usd(500), 1)]));
    let error = validator
        .inspect_result()
        .expect_err("mixed currencies are refused");
    assert_eq!(
        error,
        OrderError::Total(MoneyError::CurrencyMismatch {
            left: eur(0).currency,
            right: usd(0).currency,
        })
    );
    assert_eq!(
        error.to_string(),
        "order lines must share one currency and stay within range: \
         amounts in EUR and USD cannot be combined"
    );
}

#[test]
fn placing_an_order_with_a_price_above_the_highest_price_is_refused() {
    not_placed()
        .when(place(vec![
            line(1, eur(1299), 1),
            line(2, eur(MAX_UNIT_PRICE_MINOR + 1), 1),
        ]))
        .then_expect_error(OrderError::PriceOutOfRange {
            product_id: ProductId::from_uuid(Uuid::from_u128(2)),
        });
}

#[test]
fn placing_an_order_whose_line_amount_overflowed_before_is_refused() {
    not_placed()
        .when(place(vec![line(1, eur(i64::MAX), 2)]))
        .then_expect_error(OrderError::PriceOutOfRange {
            product_id: ProductId::from_uuid(Uuid::from_u128(1)),
        });
}

#[test]
fn placing_an_order_with_a_quantity_above_the_largest_is_refused() {
    not_placed()
        .when(place(vec![line(1, eur(1299), MAX_QUANTITY + 1)]))
        .then_expect_error(OrderError::QuantityOutOfRange {
            quantity: MAX_QUANTITY + 1,
        });
}

#[test]
fn placing_an_order_with_too_many_lines_is_refused() {
    let lines = (0..=MAX_LINES as u128)
        .map(|n| line(n, eur(100), 1))
        .collect();
    not_placed()
        .when(place(lines))
        .then_expect_error(OrderError::TooManyLines);
}

#[test]
fn the_largest_order_is_placed_with_its_total_at_the_bound() {
    let lines: Vec<OrderLine> = (0..MAX_LINES as u128)
        .map(|n| line(n, eur(MAX_UNIT_PRICE_MINOR), MAX_QUANTITY))
        .collect();
    let events = not_placed()
        .when(place(lines))
        .inspect_result()
        .expect("the largest order is placed");
    let [OrderEvent::OrderPlaced { total, .. }] = events.as_slice() else {
        panic!("expected an OrderPlaced event, got {events:?}");
    };
    assert_eq!(*total, eur(MAX_ORDER_TOTAL_MINOR));
    assert!(MAX_ORDER_TOTAL_MINOR.checked_mul(1000).is_some());
}

// Pay

#[test]
fn paying_the_total_of_a_placed_order_records_the_payment() {
    given(history(OrderStatus::Placed))
        .when(pay(eur(3098)))
        .then_expect_events(vec![paid()]);
    assert_eq!(
        replay(history(OrderStatus::Paid)).status(),
        OrderStatus::Paid
    );
}

#[test]
fn paying_less_than_the_total_is_refused() {
    let validator = given(history(OrderStatus::Placed)).when(pay(eur(3000)));
    let error = validator
        .inspect_result()
        .expect_err("a partial payment is refused");
    assert_eq!(
        error,
        OrderError::AmountMismatch {
            paid: eur(3000),
            total: eur(3098)
        }
    );
    assert_eq!(
        error.to_string(),
        "payment of 3000 EUR does not equal the order total 3098 EUR"
    );
}

#[test]
fn paying_more_than_the_total_is_refused() {
    given(history(OrderStatus::Placed))
        .when(pay(eur(3099)))
        .then_expect_error(OrderError::AmountMismatch {
            paid: eur(3099),
            total: eur(3098),
        });
}

#[test]
fn paying_the_total_in_another_currency_is_refused() {
    given(history(OrderStatus::Placed))
        .when(pay(usd(3098)))
        .then_expect_error(OrderError::AmountMismatch {
            paid: usd(3098),
            total: eur(3098),
        });
}

#[test]
fn paying_an_order_that_was_never_placed_is_refused() {
    not_placed()
        .when(pay(eur(3098)))
        .then_expect_error(OrderError::NotPlaced);
}

#[test]
fn paying_is_refused_unless_the_order_is_placed_naming_its_status() {
    for status in [
        OrderStatus::Paid,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
    ] {
        given(history(status))
            .when(pay(eur(3098)))
            .then_expect_error(OrderError::InvalidTransition {
                action: "pay",
                status,
            });
    }
}

// Ship

#[test]
fn shipping_a_paid_order_records_its_tracking_number() {
    given(history(OrderStatus::Paid))
        .when(ship())
        .then_expect_events(vec![shipped()]);
    assert_eq!(
        replay(history(OrderStatus::Shipped)).status(),
        OrderStatus::Shipped
    );
}

#[test]
fn shipping_an_unpaid_order_is_refused_naming_its_status() {
    let validator = given(history(OrderStatus::Placed)).when(ship());
    let error = validator
        .inspect_result()
        .expect_err("an unpaid order does not ship");
    assert_eq!(
        error,
        OrderError::InvalidTransition {
            action: "ship",
            status: OrderStatus::Placed
        }
    );
    assert_eq!(error.to_string(), "cannot ship an order that is placed");
    assert_eq!(error.kind(), ErrorKind::InvalidState);
}

#[test]
fn shipping_is_refused_unless_the_order_is_paid() {
    for status in [
        OrderStatus::Placed,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
    ] {
        given(history(status))
            .when(ship())
            .then_expect_error(OrderError::InvalidTransition {
                action: "ship",
                status,
            });
    }
}

#[test]
fn shipping_an_order_that_was_never_placed_is_refused() {
    not_placed()
        .when(ship())
        .then_expect_error(OrderError::NotPlaced);
}

// Deliver

#[test]
fn delivering_a_shipped_order_records_it() {
    given(history(OrderStatus::Shipped))
        .when(OrderCommand::Deliver)
        .then_expect_events(vec![OrderEvent::OrderDelivered {}]);
    assert_eq!(
        replay(history(OrderStatus::Delivered)).status(),
        OrderStatus::Delivered
    );
}

#[test]
fn delivering_is_refused_unless_the_order_is_shipped() {
    for status in [
        OrderStatus::Placed,
        OrderStatus::Paid,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
    ] {
        given(history(status))
            .when(OrderCommand::Deliver)
            .then_expect_error(OrderError::InvalidTransition {
                action: "deliver",
                status,
            });
    }
}

#[test]
fn delivering_an_order_that_was_never_placed_is_refused() {
    not_placed()
        .when(OrderCommand::Deliver)
        .then_expect_error(OrderError::NotPlaced);
}

// Cancel

#[test]
fn cancelling_a_placed_order_records_the_reason() {
    given(history(OrderStatus::Placed))
        .when(cancel())
        .then_expect_events(vec![cancelled()]);
    assert_eq!(
        replay(history(OrderStatus::Cancelled)).status(),
        OrderStatus::Cancelled
    );
}

#[test]
fn cancelling_a_paid_order_records_the_reason() {
    given(history(OrderStatus::Paid))
        .when(cancel())
        .then_expect_events(vec![cancelled()]);
    let order = replay(vec![placed(), paid(), cancelled()]);
    assert_eq!(order.status(), OrderStatus::Cancelled);
}

#[test]
fn cancelling_is_refused_once_the_order_has_shipped() {
    for status in [OrderStatus::Shipped, OrderStatus::Delivered] {
        given(history(status))
            .when(cancel())
            .then_expect_error(OrderError::InvalidTransition {
                action: "cancel",
                status,
            });
    }
    let error = OrderError::InvalidTransition {
        action: "cancel",
        status: OrderStatus::Shipped,
    };
    assert_eq!(error.to_string(), "cannot cancel an order that is shipped");
}

#[test]
fn cancelling_a_cancelled_order_is_refused() {
    given(history(OrderStatus::Cancelled))
        .when(cancel())
        .then_expect_error(OrderError::InvalidTransition {
            action: "cancel",
            status: OrderStatus::Cancelled,
        });
}

#[test]
fn cancelling_an_order_that_was_never_placed_is_refused() {
    not_placed()
        .when(cancel())
        .then_expect_error(OrderError::NotPlaced);
}

// Lifecycle

#[test]
fn a_delivered_order_keeps_its_lines_and_total() {
    let order = replay(history(OrderStatus::Delivered));
    assert_eq!(order.status(), OrderStatus::Delivered);
    assert_eq!(order.lines(), two_lines().as_slice());
    assert_eq!(order.total(), Some(eur(3098)));
}

#[test]
fn a_cancelled_or_delivered_order_accepts_no_further_command() {
    for status in [OrderStatus::Delivered, OrderStatus::Cancelled] {
        for command in [pay(eur(3098)), ship(), OrderCommand::Deliver, cancel()] {
            match given(history(status)).when(command).inspect_result() {
                Err(OrderError::InvalidTransition { status: named, .. }) => {
                    assert_eq!(named, status);
                }
                other => panic!("{status}: expected an invalid transition, got {other:?}"),
            }
        }
    }
}

#[test]
fn a_line_with_a_negative_price_cannot_be_placed() {
    not_placed()
        .when(place(vec![line(1, eur(-500), 1)]))
        .then_expect_error(OrderError::Total(MoneyError::Negative));
}
