"""What is printed and read: receipts, reports, the customer's languages."""
