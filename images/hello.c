/* husk's hello-world image: the program Docker's hello-world runs, plus one line that shows
 * the point of husk: which kernel the container runs on. Under --isolation process that is the
 * host's kernel; under --isolation vm it is husk's own guest kernel. */
#include <stdio.h>
#include <sys/utsname.h>

int main(void) {
    struct utsname u;
    const char *release = uname(&u) == 0 ? u.release : "unknown";
    printf("\nHello from husk!\n"
           "This message shows that your installation appears to be working correctly.\n\n"
           "To generate this message, husk took the following steps:\n"
           " 1. The husk client found the \"hello-world\" image locally or pulled it.\n"
           " 2. husk created a container from that image, isolated as you asked:\n"
           "    a namespaced process on the host kernel (--isolation process), or\n"
           "    a KVM microVM with its own guest kernel (--isolation vm).\n"
           " 3. The container ran the executable that produced this output,\n"
           "    on Linux kernel %s.\n\n"
           "To try something more ambitious, run a shell in either isolation:\n"
           " $ husk run -it --isolation process busybox sh\n"
           " $ husk run -it --isolation vm busybox sh\n\n",
           release);
    return 0;
}
