-- Finding a customer's orders must not scan the whole table.
CREATE INDEX orders_customer_id ON orders (customer_id);
CREATE INDEX orders_status ON orders (status);
