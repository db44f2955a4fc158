"""The demo: a generated ``orders`` table, a simulated application writing through the
dual-writer, and ``run_demo`` that migrates it end to end on SQLite."""

from shiftover.demo.orders import STATUSES, create_orders, generate_orders, order_row, orders_table

__all__ = ["STATUSES", "create_orders", "generate_orders", "order_row", "orders_table"]
