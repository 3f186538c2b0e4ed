using System.Runtime.Versioning;

// The agent drives Linux sysfs and VFIO inside the test guest; nothing here runs anywhere else.
[assembly: SupportedOSPlatform("linux")]
