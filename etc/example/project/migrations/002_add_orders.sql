-- Orders, each placed by one customer.
CREATE TABLE orders (
    id INTEGER NOT NULL PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (id),
    amount_cents INTEGER NOT NULL,
    status VARCHAR(20) NOT NULL
);
