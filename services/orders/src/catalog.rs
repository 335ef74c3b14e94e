//! What the stores sell and what it is made of: the recipes of the generator's
//! catalogue in raw materials, and the stock a store opens with.
//!
//! The stores themselves (ids, places, menus, prices) come from the producer's city
//! ([`rushhour_producer::stores`]), so that `serve` and `generate` with the same seed
//! describe the same city. Recipes and stock levels are this module's: amounts are
//! integers in each material's unit (grams, millilitres or pieces), so that reserving
//! stock is exact integer arithmetic in the database.

/// A raw material a store keeps in stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Material {
    /// The id used in URLs and events, e.g. `mozzarella`.
    pub id: &'static str,
    /// `g`, `ml` or `pcs`.
    pub unit: &'static str,
    /// What a new store holds.
    pub opening: i64,
    /// Below this the store orders more from its supplier.
    pub threshold: i64,
    /// How much one supplier purchase order brings.
    pub reorder: i64,
}

const fn m(
    id: &'static str,
    unit: &'static str,
    opening: i64,
    threshold: i64,
    reorder: i64,
) -> Material {
    Material {
        id,
        unit,
        opening,
        threshold,
        reorder,
    }
}

/// Every material, with opening stock for roughly a day of a busy store.
pub const MATERIALS: &[Material] = &[
    m("dough", "g", 60_000, 12_000, 60_000),
    m("tomato_sauce", "ml", 20_000, 4_000, 20_000),
    m("mozzarella", "g", 30_000, 6_000, 30_000),
    m("gorgonzola", "g", 4_000, 800, 4_000),
    m("parmesan", "g", 6_000, 1_200, 6_000),
    m("pepperoni", "g", 6_000, 1_200, 6_000),
    m("ham", "g", 6_000, 1_200, 6_000),
    m("pineapple", "g", 5_000, 1_000, 5_000),
    m("mushrooms", "g", 6_000, 1_200, 6_000),
    m("artichokes", "g", 4_000, 800, 4_000),
    m("olives", "g", 4_000, 800, 4_000),
    m("vegetables", "g", 10_000, 2_000, 10_000),
    m("chicken", "g", 10_000, 2_000, 10_000),
    m("tuna", "g", 4_000, 800, 4_000),
    m("onions", "g", 4_000, 800, 4_000),
    m("bread", "pcs", 150, 30, 150),
    m("salad", "g", 8_000, 1_600, 8_000),
    m("mascarpone", "g", 5_000, 1_000, 5_000),
    m("cream", "ml", 6_000, 1_200, 6_000),
    m("gelato", "ml", 10_000, 2_000, 10_000),
    m("cola", "pcs", 240, 48, 240),
    m("lemonade", "pcs", 240, 48, 240),
    m("water", "pcs", 240, 48, 240),
    m("beer", "pcs", 240, 48, 240),
    m("box", "pcs", 400, 80, 400),
];

/// The raw materials of one unit of each product on the generator's catalogue.
pub const RECIPES: &[(&str, &[(&str, i64)])] = &[
    (
        "margherita",
        &[
            ("dough", 250),
            ("tomato_sauce", 80),
            ("mozzarella", 125),
            ("box", 1),
        ],
    ),
    (
        "pepperoni",
        &[
            ("dough", 250),
            ("tomato_sauce", 80),
            ("mozzarella", 110),
            ("pepperoni", 60),
            ("box", 1),
        ],
    ),
    (
        "quattro_formaggi",
        &[
            ("dough", 250),
            ("mozzarella", 90),
            ("gorgonzola", 40),
            ("parmesan", 30),
            ("box", 1),
        ],
    ),
    (
        "diavola",
        &[
            ("dough", 250),
            ("tomato_sauce", 80),
            ("mozzarella", 110),
            ("pepperoni", 70),
            ("box", 1),
        ],
    ),
    (
        "hawaiian",
        &[
            ("dough", 250),
            ("tomato_sauce", 80),
            ("mozzarella", 110),
            ("ham", 60),
            ("pineapple", 60),
            ("box", 1),
        ],
    ),
    (
        "funghi",
        &[
            ("dough", 250),
            ("tomato_sauce", 80),
            ("mozzarella", 110),
            ("mushrooms", 70),
            ("box", 1),
        ],
    ),
    (
        "capricciosa",
        &[
            ("dough", 250),
            ("tomato_sauce", 80),
            ("mozzarella", 110),
            ("ham", 40),
            ("mushrooms", 40),
            ("artichokes", 40),
            ("olives", 20),
            ("box", 1),
        ],
    ),
    (
        "marinara",
        &[("dough", 250), ("tomato_sauce", 110), ("box", 1)],
    ),
    (
        "calzone",
        &[
            ("dough", 300),
            ("tomato_sauce", 60),
            ("mozzarella", 120),
            ("ham", 60),
            ("box", 1),
        ],
    ),
    (
        "veggie",
        &[
            ("dough", 250),
            ("tomato_sauce", 80),
            ("mozzarella", 100),
            ("vegetables", 120),
            ("box", 1),
        ],
    ),
    (
        "bbq_chicken",
        &[
            ("dough", 250),
            ("mozzarella", 110),
            ("chicken", 90),
            ("onions", 30),
            ("box", 1),
        ],
    ),
    (
        "prosciutto",
        &[
            ("dough", 250),
            ("tomato_sauce", 80),
            ("mozzarella", 110),
            ("ham", 70),
            ("box", 1),
        ],
    ),
    (
        "tonno",
        &[
            ("dough", 250),
            ("tomato_sauce", 80),
            ("mozzarella", 100),
            ("tuna", 70),
            ("onions", 20),
            ("box", 1),
        ],
    ),
    ("garlic_bread", &[("bread", 1)]),
    ("bruschetta", &[("bread", 1), ("vegetables", 60)]),
    (
        "caesar_salad",
        &[
            ("salad", 150),
            ("chicken", 60),
            ("parmesan", 15),
            ("bread", 1),
        ],
    ),
    ("caprese", &[("mozzarella", 125), ("vegetables", 100)]),
    ("chicken_wings", &[("chicken", 250)]),
    ("tiramisu", &[("mascarpone", 100), ("cream", 30)]),
    ("panna_cotta", &[("cream", 120)]),
    ("gelato", &[("gelato", 150)]),
    ("cola", &[("cola", 1)]),
    ("lemonade", &[("lemonade", 1)]),
    ("water", &[("water", 1)]),
    ("beer", &[("beer", 1)]),
];

/// The recipe of `product`, if it is on the catalogue.
pub fn recipe(product: &str) -> Option<&'static [(&'static str, i64)]> {
    RECIPES.iter().find(|(p, _)| *p == product).map(|(_, r)| *r)
}

/// The material `id`, if there is one.
pub fn material(id: &str) -> Option<&'static Material> {
    MATERIALS.iter().find(|m| m.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_product_the_generator_sells_has_a_recipe_of_known_materials() {
        for store in rushhour_producer::stores(0, 40) {
            for (product, _) in store.menu {
                let r = recipe(product).unwrap_or_else(|| panic!("{product} has no recipe"));
                assert!(!r.is_empty());
                for (mat, amount) in r {
                    assert!(material(mat).is_some(), "{product} uses unknown {mat}");
                    assert!(*amount > 0);
                }
            }
        }
    }

    #[test]
    fn thresholds_lie_below_opening_stock_and_a_reorder_refills_past_them() {
        for m in MATERIALS {
            assert!(0 < m.threshold && m.threshold < m.opening, "{}", m.id);
            assert!(m.reorder > m.threshold, "{}", m.id);
        }
    }
}
