# Sourced by the test / demo / benchmark harness (never by the node): keep DDS discovery on
# loopback on this machine and give each run its own domain. Robots keep their own settings.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST   # Jazzy, Kilted
export ROS_LOCALHOST_ONLY=1                      # Humble
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($$ % 90) + 10 ))}"
