//! Delivery: riders' pings, offers, pickups and deliveries, on top of the order service.
//!
//! The dispatcher (`rushhour_dispatch`) decides who is offered an order; this module
//! keeps the order's row and the stream in step with it. An order of type `delivery`
//! goes `placed` → (`POST /orders/{id}/ready`) `offered` to the nearest free rider →
//! `assigned` when the rider accepts (a decline or a time-out offers it to the next
//! nearest) → `picked_up` → `delivered`. When nobody free is within the maximum
//! distance the delivery is declined: the order is cancelled with reason
//! `no_rider_nearby` (its stock given back, `order_cancelled` emitted), so the stream
//! says what happened to it. Pickups and deliveries emit the contract's
//! `order_picked_up` and `order_delivered`; riders' pings emit `rider_location` (with the
//! order they carry).
//!
//! Riders and offers live in memory: they are as fresh as the last ping, and a restart
//! asks riders to report again. Orders and events are in the database, as for orders.

use rushhour_dispatch::{Decision, DispatchError, LatLon, RiderState};
use rushhour_schemas::{Event, EventType};
use serde_json::{Value, json};
use sqlx::Row;

use crate::ids;
use crate::service::{OrderService, OrderView, ServiceError, Update, enqueue_event};

fn dispatch_error(e: DispatchError) -> ServiceError {
    match e {
        DispatchError::UnknownRider(r) => ServiceError::NotFound(format!(
            "no rider {r} (riders appear with their first ping)"
        )),
        DispatchError::NoOffer(o) => ServiceError::Rejected {
            reason: "no_offer",
            detail: format!("order {o} has no open offer"),
        },
        DispatchError::Conflict(detail) => ServiceError::Rejected {
            reason: "conflict",
            detail,
        },
    }
}

impl OrderService {
    fn dispatcher(&self) -> std::sync::MutexGuard<'_, rushhour_dispatch::Dispatcher> {
        // A panic while holding the lock leaves the dispatcher as consistent as any
        // single call left it; carry on with it.
        self.dispatch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `POST /riders/{id}/location`: where a rider is. Emits `rider_location`; a rider
    /// seen for the first time is free.
    pub async fn rider_location(
        &self,
        rider: &str,
        lat: f64,
        lon: f64,
        speed_mps: Option<f64>,
    ) -> Result<Value, ServiceError> {
        let at = LatLon::new(lat, lon).ok_or_else(|| ServiceError::BadRequest {
            field: "lat".into(),
            reason: format!("({lat}, {lon}) is not a position: lat -90..90, lon -180..180"),
        })?;
        if speed_mps.is_some_and(|s| !s.is_finite() || s < 0.0) {
            return Err(ServiceError::BadRequest {
                field: "speed_mps".into(),
                reason: "must be a non-negative number".into(),
            });
        }
        let (state, carrying) = {
            let mut d = self.dispatcher();
            d.location(rider, at);
            let state = d.rider(rider).map(|(s, _)| s.clone());
            let carrying = match &state {
                Some(RiderState::Busy(o)) => Some(o.clone()),
                _ => None,
            };
            (state, carrying)
        };
        let now = (self.clock)();
        let mut ev = Event::new(ids::event_id(), EventType::RiderLocation, now);
        ev.rider_id = Some(rider.into());
        ev.lat = Some(lat);
        ev.lon = Some(lon);
        ev.speed_mps = speed_mps;
        ev.order_id = carrying.as_deref().map(Into::into);
        // The event is the whole change: one statement, no transaction around it.
        enqueue_event(&self.pool, &ev).await?;
        self.outbox.notify_one();
        if let Some(order) = &carrying {
            let _ = self.updates.send(Update {
                order_id: order.clone(),
                kind: "rider",
                data: json!({"rider_id": rider, "lat": lat, "lon": lon}),
            });
        }
        Ok(json!({"rider_id": rider, "state": state_name(state.as_ref()), "order_id": carrying}))
    }

    /// `POST /riders/{id}/availability`: off duty (`false`) or waiting (`true`).
    pub fn rider_availability(&self, rider: &str, available: bool) -> Result<Value, ServiceError> {
        let mut d = self.dispatcher();
        d.set_available(rider, available).map_err(dispatch_error)?;
        let state = d.rider(rider).map(|(s, _)| s.clone());
        Ok(json!({"rider_id": rider, "state": state_name(state.as_ref())}))
    }

    /// `POST /orders/{id}/ready`: the food is ready; offer the delivery to the nearest
    /// free rider, or decline it (cancel) when nobody is within reach.
    pub async fn ready(&self, id: &str) -> Result<OrderView, ServiceError> {
        let order = self.order(id).await?;
        if order.delivery_type != "delivery" || order.status != "placed" {
            return Err(ServiceError::Rejected {
                reason: "not_dispatchable",
                detail: format!(
                    "order {id} is a {} order with status {}; only placed delivery orders are dispatched",
                    order.delivery_type, order.status
                ),
            });
        }
        let store = sqlx::query("SELECT lat, lon FROM stores WHERE id = $1")
            .bind(order.store_id.as_str())
            .fetch_one(&self.pool)
            .await?;
        let at = LatLon {
            lat: store.try_get("lat")?,
            lon: store.try_get("lon")?,
        };
        let decision = self
            .dispatcher()
            .offer(id, at, (self.clock)())
            .map_err(dispatch_error)?;
        self.apply(id, decision).await
    }

    /// Records what the dispatcher decided for order `id`.
    async fn apply(&self, id: &str, decision: Decision) -> Result<OrderView, ServiceError> {
        match decision {
            Decision::Offered(offer) => {
                let updated = sqlx::query(
                    "UPDATE orders SET status = 'offered', rider_id = $2, updated_ms = $3 \
                     WHERE id = $1 AND status IN ('placed', 'offered')",
                )
                .bind(id)
                .bind(offer.rider_id.as_str())
                .bind((self.clock)())
                .execute(&self.pool)
                .await?
                .rows_affected();
                if updated == 0 {
                    // Cancelled meanwhile: the rider is not needed.
                    self.dispatcher().release(id);
                }
                let order = self.order(id).await?;
                self.publish(&order);
                Ok(order)
            }
            Decision::Declined => self.cancel(id, Some("no_rider_nearby")).await,
        }
    }

    /// `POST /orders/{id}/offer/accept` and `…/decline` with `{"rider_id"}`.
    pub async fn answer_offer(
        &self,
        id: &str,
        rider: &str,
        accept: bool,
    ) -> Result<OrderView, ServiceError> {
        if !accept {
            let decision = self
                .dispatcher()
                .decline(id, rider, (self.clock)())
                .map_err(dispatch_error)?;
            return self.apply(id, decision).await;
        }
        self.dispatcher()
            .accept(id, rider)
            .map_err(dispatch_error)?;
        sqlx::query(
            "UPDATE orders SET status = 'assigned', updated_ms = $3 \
             WHERE id = $1 AND status = 'offered' AND rider_id = $2",
        )
        .bind(id)
        .bind(rider)
        .bind((self.clock)())
        .execute(&self.pool)
        .await?;
        let order = self.order(id).await?;
        self.publish(&order);
        Ok(order)
    }

    /// Passes on every offer unanswered for longer than the offer time-out; returns how
    /// many. `serve` calls it every second.
    pub async fn expire_offers(&self) -> Result<usize, ServiceError> {
        let overdue = self
            .dispatcher()
            .timed_out((self.clock)(), self.offer_timeout_ms);
        for (order, rider) in &overdue {
            match self.answer_offer(order, rider, false).await {
                Ok(_) | Err(ServiceError::Rejected { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(overdue.len())
    }

    /// `POST /orders/{id}/pickup` and `…/deliver` with `{"rider_id"}`: the assigned rider
    /// picked the order up at the store, or handed it over. Emits `order_picked_up` or
    /// `order_delivered`; a rider who delivered is free again.
    pub async fn hand_over(
        &self,
        id: &str,
        rider: &str,
        delivered: bool,
    ) -> Result<OrderView, ServiceError> {
        let (from, to, event_type) = if delivered {
            ("picked_up", "delivered", EventType::OrderDelivered)
        } else {
            ("assigned", "picked_up", EventType::OrderPickedUp)
        };
        let now = (self.clock)();
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE orders SET status = $4, updated_ms = $3 \
             WHERE id = $1 AND status = $5 AND rider_id = $2 RETURNING store_id",
        )
        .bind(id)
        .bind(rider)
        .bind(now)
        .bind(to)
        .bind(from)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = updated else {
            return Err(self
                .refuse(tx, id, "wrong_state", |o| {
                    format!(
                        "order {id} is {} with rider {}; it must be {from} with rider {rider}",
                        o.status,
                        o.rider_id.as_deref().unwrap_or("none")
                    )
                })
                .await);
        };
        let store: String = row.try_get("store_id")?;
        let mut ev = Event::new(ids::event_id(), event_type, now);
        ev.order_id = Some(id.into());
        ev.store_id = Some(store.as_str().into());
        ev.rider_id = Some(rider.into());
        enqueue_event(&mut *tx, &ev).await?;
        tx.commit().await?;
        self.outbox.notify_one();
        if delivered {
            // The dispatcher may have been restarted since the offer: a rider it does not
            // know as busy simply stays as it is.
            let _ = self.dispatcher().delivered(rider);
        }
        let order = self.order(id).await?;
        self.publish(&order);
        Ok(order)
    }
}

fn state_name(state: Option<&RiderState>) -> &'static str {
    match state {
        Some(RiderState::Off) => "off",
        Some(RiderState::Free) | None => "free",
        Some(RiderState::Offered(_)) => "offered",
        Some(RiderState::Busy(_)) => "busy",
    }
}
