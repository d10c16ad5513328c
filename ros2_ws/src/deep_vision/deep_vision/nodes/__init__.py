"""ROS 2 nodes (the only layer importing rclpy) and their test harness."""
